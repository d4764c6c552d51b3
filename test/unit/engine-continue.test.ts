// A new job that starts where another left off: from one of its checkpoints (the run continues, step
// for step) or from its adapter (the weights carry over, the optimizer starts afresh).
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { initBackend, train, TrainingConfigError, type HyperparameterOptions, type StepReport, type TrainOptions } from "../../services/trainer/index.ts";
import { readSafetensors } from "../../services/trainer/safetensors.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

let work: string;
before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-continue-"));
});

const hyper: HyperparameterOptions = { epochs: 1, batchSize: 16, learningRate: 5e-3, warmupRatio: 0.1, weightDecay: 0.01, maxSeqLength: 32, seed: 7, checkpointEverySteps: 4 };

function options(name: string, overrides: Partial<TrainOptions> = {}): TrainOptions {
  return {
    modelDir: fixtureModel("distilbert-base"),
    trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
    validationFile: path.join(FIXTURES_DIR, "sentiment-validation.jsonl"),
    outDir: path.join(work, name, "adapter"),
    checkpointDir: path.join(work, name, "checkpoints"),
    lora: { r: 8, alpha: 16, dropout: 0.05 },
    hyper,
    ...overrides,
  };
}

test("a job started from another job's checkpoint matches the run that never stopped, step for step", async () => {
  const original: StepReport[] = [];
  const a = await train(options("a"), { onStep: (report) => original.push(report) });
  assert.equal(a.outcome, "completed");
  assert.equal(a.step, 12);

  const continued: StepReport[] = [];
  const b = await train(options("b", { resumeFrom: path.join(work, "a", "checkpoints", "step-4") }), { onStep: (report) => continued.push(report) });
  assert.equal(b.outcome, "completed");
  assert.deepEqual(continued.map((report) => report.step), [5, 6, 7, 8, 9, 10, 11, 12]);
  continued.forEach((report) => {
    const same = original[report.step - 1];
    assert.ok(Math.abs(report.loss - same.loss) < 1e-5, `step ${report.step}: ${report.loss} vs ${same.loss}`);
  });
  assert.ok(Math.abs(b.metrics.loss - a.metrics.loss) < 1e-5);
});

test("a job started from an adapter begins with its weights, head included", async () => {
  const source = path.join(work, "a", "adapter");
  // Stopped before its first step, its checkpoint holds the weights it starts from.
  const b = await train(options("from-adapter", { initFrom: source }), { stopRequested: () => "checkpoint" });
  assert.equal(b.outcome, "checkpointed");
  assert.equal(b.step, 0);
  const expected = await readSafetensors(path.join(source, "adapter_model.safetensors"));
  const got = await readSafetensors(path.join(b.lastCheckpoint!.dir, "adapter_model.safetensors"));
  assert.deepEqual([...got.keys()].sort(), [...expected.keys()].sort());
  assert.ok([...got.keys()].some((key) => /classifier/.test(key)));
  for (const [key, { data }] of expected) assert.deepEqual(got.get(key)!.data, data, key);
});

test("an adapter of another rank cannot be a starting point", async () => {
  await assert.rejects(
    train(options("other-rank", { initFrom: path.join(work, "a", "adapter"), lora: { r: 4, alpha: 16, dropout: 0.05 } })),
    (error) => error instanceof TrainingConfigError && /rank/.test(error.message),
  );
});
