// `npm run demo` against a running API and worker: it creates the tiny model, trains it with
// live progress, saves the adapter and prints the evaluation and a prediction.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { serveWithWorker, type ServiceProcess } from "../helpers/worker-harness.ts";

const repoRoot = path.resolve(import.meta.dirname, "../..");

describe("npm run demo", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let apiUrl: string;
  let outDir: string;

  before(async () => {
    api = await startTestApi("worker_demo");
    // The API's test models hold only config.json: the demo must create the real tiny model.
    await fs.rm(path.join(api.modelsDir, "tiny-distilbert"), { recursive: true, force: true });
    outDir = await fs.mkdtemp(path.join(os.tmpdir(), "lora-demo-out-"));
    ({ baseUrl: apiUrl, worker } = await serveWithWorker(api));
  });

  after(async () => {
    await worker.stop();
    await api.close();
    await fs.rm(outDir, { recursive: true, force: true });
  });

  it("runs the README's main job end to end", async () => {
    const demo = spawn(process.execPath, ["--import", "tsx", "scripts/demo.ts"], {
      cwd: repoRoot,
      env: { ...process.env, API_URL: apiUrl, BOOTSTRAP_API_KEY: api.keys.a.replace(/^Bearer /, ""), MODELS_DIR: api.modelsDir, DEMO_OUT: outDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    demo.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    demo.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    const [code] = await once(demo, "exit");
    assert.equal(code, 0, `${output}\n${worker.log}`);
    assert.match(output, /creating the tiny model/);
    assert.match(output, /\[#+-*\]\s+\d+% step \d+\/\d+/, "a progress bar");
    assert.match(output, /100% step (\d+)\/\1/);
    const accuracy = /accuracy\s+([\d.]+)\s+([\d.]+)/.exec(output);
    assert.ok(accuracy, output);
    assert.ok(Number(accuracy[2]) > Number(accuracy[1]), `fine-tuned accuracy ${accuracy[2]} should beat the base ${accuracy[1]}`);
    assert.match(output, /"the movie was excellent" → (positive|negative) \(0\.\d{3}\)/);
    const saved = await fs.readdir(outDir);
    assert.equal(saved.length, 1);
    assert.match(saved[0], /^adapter-[0-9a-f-]+\.tar\.gz$/);
    const adapter = await api.db.prisma.adapter.findFirstOrThrow();
    assert.equal((await fs.stat(path.join(outDir, saved[0]))).size, Number(adapter.sizeBytes));
  });
});
