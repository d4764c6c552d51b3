// Backend selection with and without the BLAS addon, each in its own process (the choice is
// made once per process; a later call asking for another is refused). TRAINER_BLAS_ADDON pointing
// at a missing file stands for a machine where the addon did not build.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { loadBlasAddon } from "../../services/trainer/native/blas.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

const probe = `
import * as tf from "@tensorflow/tfjs";
import { loadConfig } from "./services/common/config.ts";
import { initBackend } from "./services/trainer/backend.ts";
const lines = [];
const log = { info: (o, m) => lines.push({ level: "info", m }), warn: (o, m) => lines.push({ level: "warn", m, notes: o.notes }) };
try {
  const config = loadConfig();
  const info = await initBackend(config.trainerBackend, { log, blasAddonPath: config.trainerBlasAddon });
  await initBackend(config.trainerBackend, { log });
  const byName = await initBackend(info.name);
  const conflict = await initBackend("cpu").then(() => undefined, (error) => error.name + ": " + error.message);
  const a = tf.tensor3d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
  const b = tf.tensor2d([1, 0, 2, -1, 0.5, 3], [2, 3]);
  const product = Array.from(await tf.matMul(a, b, false, true).data());
  console.log(JSON.stringify({ name: info.name, byName: byName.name, conflict, active: tf.getBackend(), product, lines }));
} catch (error) {
  console.log(JSON.stringify({ error: error.message }));
}
`;

function select(backend: string, addonPath?: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, TRAINER_BACKEND: backend };
  if (addonPath === undefined) delete env.TRAINER_BLAS_ADDON;
  else env.TRAINER_BLAS_ADDON = addonPath;
  const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", probe], {
    cwd: new URL("../..", import.meta.url),
    env,
    encoding: "utf8",
  });
  assert.equal(child.status, 0, child.stderr);
  return JSON.parse(child.stdout.trim().split("\n").at(-1)!);
}

// a · bᵀ of the probe's operands, row by row.
const aRows = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]];
const bRows = [[1, 0, 2], [-1, 0.5, 3]];
const expectedProduct = aRows.flatMap((row) => bRows.map((column) => row.reduce((sum, x, i) => sum + x * column[i], 0)));
const addon = loadBlasAddon();
const skipFast = !addon.ok && !process.env.CI ? `BLAS addon not built (${addon.reason}); run scripts/build-native.sh` : false;

describe("backend selection and the BLAS addon", () => {
  it("uses wasm-blas when the addon loads, logging only the choice", { skip: skipFast }, () => {
    const result = select("auto");
    assert.equal(result.name, "wasm-blas");
    assert.equal(result.active, "wasm");
    assert.deepEqual(result.product, expectedProduct);
    assert.deepEqual(result.lines.map((line: { level: string }) => line.level), ["info"]);
  });

  it("falls back to plain wasm when the addon is missing, says so once, and computes the same", () => {
    const result = select("auto", "/nonexistent/blas.node");
    assert.equal(result.name, "wasm");
    assert.deepEqual(result.product, expectedProduct);
    const warnings = result.lines.filter((line: { level: string }) => line.level === "warn");
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].m, /BLAS addon unavailable/);
    assert.match(warnings[0].notes.join(" "), /\/nonexistent\/blas\.node.*build-native\.sh/);
  });

  it("answers a later call with the same choice or the selected backend's name, and refuses another choice", () => {
    const result = select("auto", "/nonexistent/blas.node");
    assert.equal(result.byName, "wasm");
    assert.match(result.conflict, /^BackendConflictError: .*already initialised as wasm \(asked for auto\); it cannot be changed to cpu/);
    assert.equal(result.active, "wasm", "the refused choice changed nothing");
  });

  it("refuses TRAINER_BACKEND=wasm-blas without the addon, naming the cause", () => {
    assert.match(select("wasm-blas", "/nonexistent/blas.node").error, /TRAINER_BACKEND=wasm-blas but .*BLAS addon not loaded/);
  });

  it("trains the engine to the same loss curve with and without the addon", { skip: skipFast }, async () => {
    const fixtures = await engineFixtures();
    const work = await mkdtemp(path.join(os.tmpdir(), "blas-train-"));
    const script = `
      import { initBackend, train } from "./services/trainer/index.ts";
      await initBackend(process.env.TRAINER_BACKEND);
      const losses = [];
      await train({
        modelDir: ${JSON.stringify(fixtureModel("distilbert-base"))},
        trainFile: ${JSON.stringify(path.join(fixtures, "sentiment-train.jsonl"))},
        outDir: process.env.OUT_DIR,
        lora: { r: 4, alpha: 8, dropout: 0.1 },
        hyper: { epochs: 1, batchSize: 16, learningRate: 1e-2, warmupRatio: 0, weightDecay: 0.01, maxSeqLength: 32, seed: 3, maxSteps: 3 },
      }, { onStep: (report) => losses.push(report.loss) });
      console.log(JSON.stringify(losses));
    `;
    const curve = (backend: string) => {
      const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
        cwd: new URL("../..", import.meta.url),
        env: { ...process.env, TRAINER_BACKEND: backend, OUT_DIR: path.join(work, backend) },
        encoding: "utf8",
      });
      assert.equal(child.status, 0, child.stderr);
      return JSON.parse(child.stdout.trim().split("\n").at(-1)!) as number[];
    };
    const [fast, plain] = [curve("wasm-blas"), curve("wasm")];
    await rm(work, { recursive: true, force: true });
    assert.equal(fast.length, 3);
    fast.forEach((loss, step) => assert.ok(Math.abs(loss - plain[step]) <= 1e-4 * Math.max(1, Math.abs(plain[step])), `step ${step + 1}: ${loss} vs ${plain[step]}`));
    assert.notEqual(fast[0], fast.at(-1));
  });

  it("loads in a worker thread (the addon is context-aware)", { skip: skipFast }, async () => {
    const { Worker } = await import("node:worker_threads");
    const source = `
      const { parentPort, workerData } = require("node:worker_threads");
      const addon = require(workerData);
      const a = new Float32Array([1, 2, 3, 4]), b = new Float32Array([5, 6, 7, 8]), out = new Float32Array(4);
      addon.matmul(a, b, out, new Int32Array(1), new Int32Array(1), 2, 2, 2, false, false);
      parentPort.postMessage(Array.from(out));
    `;
    const worker = new Worker(source, { eval: true, workerData: addon.ok ? addon.path : "" });
    const product = await new Promise((resolve, reject) => worker.once("message", resolve).once("error", reject));
    await worker.terminate();
    assert.deepEqual(product, [1 * 5 + 2 * 7, 1 * 6 + 2 * 8, 3 * 5 + 4 * 7, 3 * 6 + 4 * 8]);
  });

  it("keeps plain wasm when TRAINER_BACKEND=wasm even with the addon present", () => {
    const result = select("wasm");
    assert.equal(result.name, "wasm");
    assert.deepEqual(result.product, expectedProduct);
  });
});
