// The tiny model and learnable dataset that worker tests train on (the engine's generated
// fixtures), with settings that give a run of a few seconds and a checkpoint every ~second.
import fs from "node:fs/promises";
import path from "node:path";
import { engineFixtures, fixtureModel } from "./engine-fixtures.ts";
import type { JobSpec } from "./worker-harness.ts";

export interface TrainingFixture {
  modelDir: string;
  job: JobSpec;
  checkpointEverySteps: number;
}

/** Copies the tiny DistilBERT classifier into `modelsDir` as `tiny-distilbert`. */
export async function trainingFixture(modelsDir: string): Promise<TrainingFixture> {
  const fixtures = await engineFixtures();
  const modelDir = path.join(modelsDir, "tiny-distilbert");
  await fs.cp(fixtureModel("distilbert-cls"), modelDir, { recursive: true });
  return {
    modelDir,
    checkpointEverySteps: 20,
    job: {
      modelDir,
      datasetFile: path.join(fixtures, "sentiment-train.jsonl"),
      validationSplit: 0.2,
      lora: { r: 4, alpha: 8, dropout: 0.1 },
      hyperparameters: { epochs: 4, batchSize: 8, learningRate: 0.005, warmupRatio: 0.1, weightDecay: 0.01, maxSeqLength: 32, seed: 42, evalEverySteps: 40 },
    },
  };
}
