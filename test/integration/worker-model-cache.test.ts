// Base models in the S3 store (s3rver): `npm run models -- upload` puts a folder under
// models/<id>/, the registry's source lists it from the bucket (nothing in MODELS_DIR), and a
// worker's LocalCache downloads models into DATA_DIR, holds them while in use, and evicts the
// least recently used one when over its size bound.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { pino } from "pino";
import { loadConfig, type Config } from "../../services/common/config.ts";
import { modelSource, uploadModel } from "../../services/common/model-store.ts";
import { modelKey } from "../../services/common/models.ts";
import type { S3ArtifactStore } from "../../services/common/s3-artifacts.ts";
import { LocalCache } from "../../services/worker/local-cache.ts";
import { TestS3 } from "../helpers/s3-server.ts";

const run = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, "../..");
const MODEL_BYTES = 1000;

describe("base models in the S3 store and the worker's model cache", () => {
  let s3: TestS3;
  let root: string;
  let config: Config;
  let store: S3ArtifactStore;
  let env: Record<string, string>;

  /** A folder with config.json and a weights file padding the model to about MODEL_BYTES. */
  async function modelFolder(name: string): Promise<string> {
    const folder = path.join(root, "sources", name);
    await fs.mkdir(folder, { recursive: true });
    const config = JSON.stringify({ architectures: ["DistilBertForSequenceClassification"], model_type: "distilbert" });
    await fs.writeFile(path.join(folder, "config.json"), config);
    await fs.writeFile(path.join(folder, "model.safetensors"), Buffer.alloc(MODEL_BYTES - config.length, name.length));
    return folder;
  }

  before(async () => {
    s3 = await TestS3.start("model-cache");
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-model-cache-"));
    env = { ...s3.env(), DATA_DIR: path.join(root, "data"), MODELS_DIR: path.join(root, "empty-models"), LOG_LEVEL: "silent" };
    config = loadConfig(env);
    store = s3.store(path.join(root, "worker-data"));
  });

  after(async () => {
    store?.close();
    await s3?.stop();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  it("uploads a model folder with the CLI and lists it from the bucket, not MODELS_DIR", async () => {
    const folder = await modelFolder("source-a");
    const cli = await run("npx", ["tsx", "services/api/models-cli.ts", "upload", folder, "--id", "model-a"], { cwd: repoRoot, env: { ...process.env, ...env } });
    assert.match(cli.stderr, /uploaded model-a \(DistilBertForSequenceClassification; classification\) to the s3 store/);
    await uploadModel(config, store, await modelFolder("model-b"));
    await uploadModel(config, store, await modelFolder("model-c"));
    await assert.rejects(uploadModel(config, store, path.join(root, "sources")), /no readable config.json/);
    await assert.rejects(fs.access(config.modelsDir), "MODELS_DIR stays empty");

    const listed = await modelSource(config, store)();
    assert.deepEqual(listed.map((model) => [model.id, model.tasks]), [["model-a", ["classification"]], ["model-b", ["classification"]], ["model-c", ["classification"]]]);
    const cliList = await run("npx", ["tsx", "services/api/models-cli.ts", "list"], { cwd: repoRoot, env: { ...process.env, ...env } });
    assert.deepEqual(cliList.stdout.trim().split("\n").map((line) => line.split("\t")[0]), ["model-a", "model-b", "model-c"]);
  });

  it("downloads models into the bounded cache, keeps held ones, and evicts the least recently used", async () => {
    const lines: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
    // Room for two models, not three.
    const cache = new LocalCache(store, 2.5 * MODEL_BYTES, logger);
    const local = (id: string) => store.pathOf(modelKey(id));
    const present = async (id: string) => fs.access(local(id)).then(() => true, () => false);

    const a = await cache.acquire(modelKey("model-a"));
    assert.equal(a.path, local("model-a"));
    assert.equal(JSON.parse(await fs.readFile(path.join(a.path, "config.json"), "utf8")).model_type, "distilbert");
    assert.equal((await fs.stat(path.join(a.path, "model.safetensors"))).size + (await fs.stat(path.join(a.path, "config.json"))).size, MODEL_BYTES);
    const b = await cache.acquire(modelKey("model-b"));
    a.release();
    b.release();
    // model-a used again: model-b is now the least recently used.
    (await cache.acquire(modelKey("model-a"))).release();
    const c = await cache.acquire(modelKey("model-c"));
    assert.deepEqual(cache.keys(), [modelKey("model-a"), modelKey("model-c")]);
    assert.deepEqual([await present("model-a"), await present("model-b"), await present("model-c")], [true, false, true]);
    assert.ok(cache.sizeBytes <= 2.5 * MODEL_BYTES);
    assert.ok(lines.some((line) => line.includes("evicted from the local cache") && line.includes("models/model-b")), lines.join(""));

    // Held models are never evicted, even over the bound; released, the oldest goes.
    c.release();
    const heldA = await cache.acquire(modelKey("model-a"));
    const heldB = await cache.acquire(modelKey("model-b"));
    assert.deepEqual([await present("model-a"), await present("model-b"), await present("model-c")], [true, true, false], "model-c was the only one free to go");
    const again = await cache.acquire(modelKey("model-c"));
    assert.equal(cache.keys().length, 3, "all three held: over the bound rather than evicting one in use");
    heldA.release();
    heldB.release();
    again.release();
    (await cache.acquire(modelKey("model-c"))).release();
    assert.deepEqual(cache.keys(), [modelKey("model-b"), modelKey("model-c")]);

    // A restarted worker counts the copies already on its disk.
    const restarted = new LocalCache(store, 2.5 * MODEL_BYTES, logger);
    (await restarted.acquire(modelKey("model-b"))).release();
    assert.deepEqual(new Set(restarted.keys()), new Set([modelKey("model-b"), modelKey("model-c")]));
    assert.equal(restarted.sizeBytes, 2 * MODEL_BYTES);
  });
});
