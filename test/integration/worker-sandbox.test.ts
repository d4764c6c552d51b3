// The training sandbox: a worker thread that trains while the main thread's event loop
// (BullMQ lock renewal, progress writes) stays free, stops on request, and survives being killed.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { loadConfig } from "../../services/common/config.ts";
import { createLogger } from "../../services/common/logger.ts";
import type { TrainOptions } from "../../services/trainer/index.ts";
import { Sandbox, SandboxLost, TrainingFailed } from "../../services/worker/sandbox.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

describe("training sandbox", () => {
  let root: string;
  let options: TrainOptions;
  const sandbox = new Sandbox(loadConfig(), createLogger("silent", "test"));
  const listener = (checkpoints: number[] = [], steps: number[] = []) => ({
    onStep: (report: { step: number }) => void steps.push(report.step),
    onEvaluation: () => {},
    onCheckpoint: async ({ step }: { step: number }) => void checkpoints.push(step),
  });

  before(async () => {
    const fixtures = await engineFixtures();
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-sandbox-"));
    options = {
      modelDir: fixtureModel("distilbert-cls"),
      trainFile: path.join(fixtures, "sentiment-train.jsonl"),
      validationSplit: 0.2,
      outDir: path.join(root, "out"),
      lora: { r: 4, alpha: 8, dropout: 0 },
      hyper: { epochs: 3, batchSize: 8, learningRate: 0.005, warmupRatio: 0, weightDecay: 0, maxSeqLength: 32, seed: 7, checkpointEverySteps: 10 },
      checkpointDir: path.join(root, "checkpoints"),
    };
  });

  after(async () => {
    await sandbox.terminate();
    await fs.rm(root, { recursive: true, force: true });
  });

  it("trains to completion while the main event loop keeps ticking", async () => {
    let ticks = 0;
    const timer = setInterval(() => (ticks += 1), 20);
    const started = Date.now();
    const checkpoints: number[] = [];
    const result = await sandbox.run(options, listener(checkpoints));
    clearInterval(timer);
    const elapsed = Date.now() - started;
    assert.equal(result.outcome, "completed");
    assert.deepEqual(checkpoints, [10, 20, 30, 40, 50, 60].filter((step) => step < result.step));
    assert.ok(await fs.stat(path.join(options.outDir, "adapter_model.safetensors")));
    // A training step on the main thread would block it for the whole run.
    assert.ok(ticks >= (elapsed / 20) * 0.3, `${ticks} ticks of 20 ms in ${elapsed} ms`);
  });

  it("stops with a checkpoint or a cancel when asked, even before the run begins", async () => {
    sandbox.requestStop("checkpoint");
    const checkpointed = await sandbox.run({ ...options, outDir: path.join(root, "out-2") }, listener());
    assert.equal(checkpointed.outcome, "checkpointed");
    sandbox.clearStop();
    const steps: number[] = [];
    const cancelled = sandbox.run({ ...options, outDir: path.join(root, "out-3") }, {
      ...listener([], steps),
      onStep: (report) => {
        steps.push(report.step);
        if (report.step === 5) sandbox.requestStop("cancel");
      },
    });
    const result = await cancelled;
    sandbox.clearStop();
    assert.equal(result.outcome, "cancelled");
    assert.ok(result.step >= 5 && result.step < 10, `stopped at step ${result.step}`);
  });

  it("rejects with SandboxLost when its thread is ended, and runs the next job in a fresh thread", async () => {
    const run = sandbox.run({ ...options, outDir: path.join(root, "out-4") }, {
      ...listener(),
      onStep: (report) => {
        if (report.step === 3) void sandbox.terminate();
      },
    });
    await assert.rejects(run, SandboxLost);
    const next = await sandbox.run({ ...options, outDir: path.join(root, "out-5"), hyper: { ...options.hyper, epochs: 1 } }, listener());
    assert.equal(next.outcome, "completed");
  });

  it("reports an engine error as TrainingFailed", async () => {
    await assert.rejects(sandbox.run({ ...options, trainFile: path.join(root, "missing.jsonl") }, listener()), TrainingFailed);
  });
});
