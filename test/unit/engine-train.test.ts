import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { initBackend, train, TrainingConfigError, type EvaluationReport, type HyperparameterOptions, type StepReport, type TrainOptions } from "../../services/trainer/index.ts";
import { readSafetensors } from "../../services/trainer/safetensors.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

let work: string;
before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-train-"));
});

const baseHyper: HyperparameterOptions = { epochs: 2, batchSize: 16, learningRate: 5e-3, warmupRatio: 0.1, weightDecay: 0.01, maxSeqLength: 32, seed: 7 };

function options(name: string, overrides: Partial<TrainOptions> = {}, hyper: HyperparameterOptions = {}): TrainOptions {
  return {
    modelDir: fixtureModel("distilbert-base"),
    trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
    validationFile: path.join(FIXTURES_DIR, "sentiment-validation.jsonl"),
    outDir: path.join(work, name, "adapter"),
    lora: { r: 8, alpha: 16, dropout: 0.05 },
    hyper: { ...baseHyper, ...hyper },
    ...overrides,
  };
}

test("training a tiny model on a learnable task lifts validation accuracy from chance to above 90%", async () => {
  const evaluations: EvaluationReport[] = [];
  const steps: StepReport[] = [];
  const result = await train(options("learn", { lora: { r: 8, alpha: 16, dropout: 0 } }, { epochs: 30, learningRate: 1e-2, evalEverySteps: 120 }), {
    onStep: (report) => steps.push(report),
    onEvaluation: (report) => evaluations.push(report),
  });
  assert.equal(result.outcome, "completed");
  assert.equal(result.step, 360);
  assert.ok(result.baseline.accuracy < 0.7, `baseline accuracy ${result.baseline.accuracy} should be near chance`);
  assert.ok(result.metrics.accuracy > 0.9, `adapter accuracy ${result.metrics.accuracy}`);
  for (const key of ["loss", "accuracy", "macro_f1", "precision/positive", "recall/positive", "precision/negative", "recall/negative"]) {
    assert.equal(typeof result.metrics[key], "number", key);
    assert.equal(typeof result.baseline[key], "number", key);
  }
  assert.deepEqual(evaluations.map((e) => e.step), [120, 240, 360]);
  assert.deepEqual(evaluations[0].baseline, result.baseline);
  const last = steps.at(-1)!;
  assert.equal(last.totalSteps, 360);
  assert.ok(last.tokensPerSecond > 0 && last.tokensSeen > 0 && last.etaMs === 0);
  assert.ok(steps[0].learningRate < steps[40].learningRate, "warmup raises the learning rate");
  assert.ok(last.learningRate < steps[40].learningRate, "then it decays");
  const metricsFile = JSON.parse(await readFile(path.join(result.adapterDir!, "metrics.json"), "utf8"));
  assert.deepEqual(metricsFile.labels, ["negative", "positive"]);
  assert.equal(metricsFile.metrics.accuracy, result.metrics.accuracy);
  assert.equal(metricsFile.loss_curve.length, 360);
});

test("a run resumed from a mid-run checkpoint continues the same loss curve", async () => {
  const hyper: HyperparameterOptions = { epochs: 3, gradientAccumulationSteps: 2, scheduler: "cosine", classWeights: "balanced", maxGradNorm: 0.5 };
  const full: StepReport[] = [];
  const uninterrupted = await train(options("full", {}, hyper), { onStep: (r) => full.push(r) });
  assert.equal(uninterrupted.outcome, "completed");

  const checkpointDir = path.join(work, "checkpoints");
  const before: StepReport[] = [];
  const first = await train(options("first", { checkpointDir }, hyper), {
    onStep: (r) => before.push(r),
    stopRequested: () => (before.length === 7 ? "checkpoint" : "none"),
  });
  // Same seed, same backend: the same losses, bit for bit.
  assert.deepEqual(before.map((r) => r.loss), full.slice(0, 7).map((r) => r.loss));
  assert.equal(first.outcome, "checkpointed");
  assert.deepEqual(first.lastCheckpoint, { step: 7, dir: path.join(checkpointDir, "step-7") });
  assert.equal(existsSync(path.join(work, "first", "adapter")), false, "no adapter for an interrupted run");

  // Only trainable parameters have optimizer state.
  const adapterKeys = [...(await readSafetensors(path.join(checkpointDir, "step-7", "adapter_model.safetensors"))).keys()].sort();
  const momentKeys = [...(await readSafetensors(path.join(checkpointDir, "step-7", "optimizer.safetensors"))).keys()];
  assert.deepEqual(momentKeys.filter((k) => k.startsWith("exp_avg/")).map((k) => k.slice(8)).sort(), adapterKeys);
  assert.ok(adapterKeys.every((key) => key.includes("lora_") || /classifier/.test(key)));

  const resumed: StepReport[] = [];
  const second = await train(options("second", { checkpointDir, resumeFrom: first.lastCheckpoint!.dir }, hyper), { onStep: (r) => resumed.push(r) });
  assert.equal(second.outcome, "completed");
  assert.equal(resumed[0].step, 8);
  assert.equal(resumed.at(-1)!.step, full.at(-1)!.step);
  assert.ok(Math.abs(resumed.at(-1)!.loss - full.at(-1)!.loss) < 1e-5, `${resumed.at(-1)!.loss} vs ${full.at(-1)!.loss}`);
  resumed.forEach((report, i) => assert.ok(Math.abs(report.loss - full[i + 7].loss) < 1e-5, `step ${report.step}`));
  assert.ok(Math.abs(second.metrics.loss - uninterrupted.metrics.loss) < 1e-5);
});

test("checkpoints are written every N steps and reported through the hook", async () => {
  const checkpointDir = path.join(work, "periodic");
  const seen: number[] = [];
  const result = await train(options("periodic", { checkpointDir }, { epochs: 1, checkpointEverySteps: 4 }), { onCheckpoint: ({ step }) => void seen.push(step) });
  assert.deepEqual(seen, [4, 8]);
  assert.equal(result.step, 12);
  assert.ok(existsSync(path.join(checkpointDir, "step-8", "trainer_state.json")));
});

test("a cancel request stops between steps and writes no adapter", async () => {
  let steps = 0;
  const result = await train(options("cancel"), { onStep: () => steps++, stopRequested: () => (steps >= 2 ? "cancel" : "none") });
  assert.equal(result.outcome, "cancelled");
  assert.equal(result.step, 2);
  assert.equal(result.adapterDir, undefined);
  assert.equal(existsSync(path.join(work, "cancel", "adapter")), false);
});

test("validation split and invalid settings", async () => {
  const split = await train(options("split", { validationFile: undefined, validationSplit: 0.25 }, { maxSteps: 2 }));
  assert.equal(split.step, 2);
  assert.equal(typeof split.metrics.accuracy, "number");
  await assert.rejects(train(options("bad", {}, { batchSize: 0 })), TrainingConfigError);
  await assert.rejects(train(options("bad", {}, { learningRate: -1 })), TrainingConfigError);
  await assert.rejects(train(options("bad", {}, { checkpointEverySteps: 2 })), /needs a checkpointDir/);
  await assert.rejects(train(options("bad", { lora: { r: 0, alpha: 1, dropout: 0 } })), /lora r/);
  await assert.rejects(train(options("bad", { lora: { r: 2, alpha: 1, dropout: 0, targetModules: ["nothing_here"] } })), /match no linear layer/);
});
