// The tiny model and the learnable example dataset that worker tests train on, with
// settings that give a run of a few seconds and several checkpoints.
import fs from "node:fs/promises";
import path from "node:path";
import type { JobSpec } from "./worker-harness.ts";

const repoRoot = path.resolve(import.meta.dirname, "../..");
export const EXAMPLE_DATASET = path.join(repoRoot, "examples/sentiment.jsonl");

export interface TrainingFixture {
  modelDir: string;
  job: JobSpec;
  checkpointEverySteps: number;
}

export async function trainingFixture(modelsDir: string): Promise<TrainingFixture> {
  const modelDir = path.join(modelsDir, "tiny-distilbert");
  await fs.mkdir(modelDir, { recursive: true });
  await fs.writeFile(path.join(modelDir, "config.json"), JSON.stringify({ architectures: ["DistilBertForSequenceClassification"], model_type: "distilbert" }));
  return {
    modelDir,
    checkpointEverySteps: 4,
    job: {
      modelDir,
      datasetFile: EXAMPLE_DATASET,
      validationSplit: 0.2,
      lora: { r: 4, alpha: 8, dropout: 0 },
      hyperparameters: { epochs: 2, batchSize: 8, learningRate: 0.01, warmupRatio: 0, weightDecay: 0, maxSeqLength: 32, seed: 42, maxSteps: 20 },
    },
  };
}
