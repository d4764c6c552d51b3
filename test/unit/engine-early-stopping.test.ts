// Early stopping on a fixture built to overfit: training labels are noise, so the model can only
// memorise them and the validation loss rises after the first evaluations. The run stops once
// patience runs out, and the adapter is the best checkpoint, byte for byte (or the last step's
// weights when asked).
import assert from "node:assert/strict";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { initBackend, train, type EvaluationReport, type TrainOptions } from "../../services/trainer/index.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";
import { noiseRecords } from "../helpers/overfit-fixture.ts";

let work: string;

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-early-stopping-"));
  await writeFile(path.join(work, "train.jsonl"), noiseRecords(48, 1));
  await writeFile(path.join(work, "validation.jsonl"), noiseRecords(32, 2));
});

function options(name: string, keep: "best" | "last"): TrainOptions {
  return {
    modelDir: fixtureModel("distilbert-base"),
    trainFile: path.join(work, "train.jsonl"),
    validationFile: path.join(work, "validation.jsonl"),
    outDir: path.join(work, name, "adapter"),
    checkpointDir: path.join(work, name, "checkpoints"),
    lora: { r: 8, alpha: 16, dropout: 0 },
    hyper: {
      epochs: 60, batchSize: 8, learningRate: 2e-2, warmupRatio: 0, maxSeqLength: 16, seed: 3, evalEverySteps: 6,
      earlyStopping: { metric: "loss", patience: 3, keep },
    },
  };
}

test("stops a run whose validation loss rises, and its adapter is the best checkpoint's bytes", async () => {
  const evaluations: EvaluationReport[] = [];
  const checkpoints: number[] = [];
  const result = await train(options("best", "best"), { onEvaluation: (report) => evaluations.push(report), onCheckpoint: ({ step }) => void checkpoints.push(step) });
  assert.equal(result.outcome, "completed");
  const losses = evaluations.map((report) => `${report.step}: ${report.metrics.loss.toFixed(4)}`).join(", ");
  assert.ok(result.stoppedEarlyAt !== undefined && result.stoppedEarlyAt < 6 * 60, `stopped early; evaluations ${losses}`);
  assert.equal(result.step, result.stoppedEarlyAt);
  const best = evaluations.reduce((low, report) => (report.metrics.loss < low.metrics.loss ? report : low));
  assert.equal(result.adapterStep, best.step, losses);
  assert.ok(best.step < result.step, `the validation loss rose after step ${best.step}: ${losses}`);
  const after = evaluations.filter((report) => report.step > best.step);
  assert.equal(after.length, 3, "patience 3: three evaluations without improvement");
  assert.ok(after.every((report) => report.metrics.loss >= best.metrics.loss), losses);
  assert.ok(checkpoints.includes(best.step), `a checkpoint was saved at the best step; saved ${checkpoints}`);
  assert.deepEqual(result.metrics, best.metrics, "the result's metrics are the adapter's");

  const adapterBytes = await readFile(path.join(result.adapterDir!, "adapter_model.safetensors"));
  const checkpointBytes = await readFile(path.join(work, "best", "checkpoints", `step-${best.step}`, "adapter_model.safetensors"));
  assert.ok(adapterBytes.equals(checkpointBytes), "the adapter is the best checkpoint, byte for byte");
  const metricsFile = JSON.parse(await readFile(path.join(result.adapterDir!, "metrics.json"), "utf8"));
  assert.equal(metricsFile.adapter_step, best.step);
  assert.equal(metricsFile.early_stopping.best_step, best.step);
  assert.equal(metricsFile.early_stopping.stopped_at_step, result.stoppedEarlyAt);
  assert.equal(metricsFile.metrics.loss, best.metrics.loss);
});

test("keeps the last step's weights when asked", async () => {
  const result = await train(options("last", "last"), {});
  assert.ok(result.stoppedEarlyAt !== undefined);
  assert.equal(result.adapterStep, result.step);
  const metricsFile = JSON.parse(await readFile(path.join(result.adapterDir!, "metrics.json"), "utf8"));
  assert.equal(metricsFile.adapter_step, result.step);
});
