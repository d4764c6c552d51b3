// What a job would cost before it runs: examples, tokens and steps counted the way the engine
// counts them (services/trainer/loop.ts), a duration from the throughput workers measured for the
// model, and the memory it needs. Every rule and constant is documented in services/api/README.md.
import fs from "node:fs/promises";
import path from "node:path";
import type { PrismaClient } from "../common/db.ts";
import type { JobSettings } from "../trainer/index.ts";

/** Characters per token assumed when counting a dataset's tokens without tokenizing it. */
export const CHARS_PER_TOKEN = 4;
/** Special tokens (BOS/EOS, CLS/SEP) added to each example. */
export const SPECIAL_TOKENS_PER_EXAMPLE = 2;
/** The newest jobs of a model whose measured throughput is considered; their median is used. */
export const THROUGHPUT_SAMPLE = 20;

export interface DatasetSize {
  rows: number;
  /** Mean characters per example (Dataset.stats.length.mean). */
  meanChars: number;
}

export interface ModelShape {
  config: Record<string, unknown>;
  /** Bytes of the weight files in the model folder. */
  weightsBytes: number;
}

const firstNumber = (config: Record<string, unknown>, names: string[], fallback: number) => {
  for (const name of names) if (typeof config[name] === "number") return config[name] as number;
  return fallback;
};

/** The examples, tokens and steps of a job, as the engine will count them. */
export function countWork(train: DatasetSize, validationSplit: number | undefined, settings: JobSettings) {
  const hyper = settings.hyperparameters;
  const held = validationSplit ? Math.max(1, Math.floor(train.rows * validationSplit)) : 0;
  const trainRows = train.rows - held;
  const tokensPerExample = Math.min(hyper.maxSeqLength, Math.ceil(train.meanChars / CHARS_PER_TOKEN) + SPECIAL_TOKENS_PER_EXAMPLE);
  // Packing concatenates examples into full maxSeqLength blocks.
  const trainExamples = hyper.packing ? Math.max(1, Math.ceil((trainRows * tokensPerExample) / hyper.maxSeqLength)) : trainRows;
  const exampleTokens = hyper.packing ? hyper.maxSeqLength : tokensPerExample;
  const stepsPerEpoch = Math.ceil(Math.ceil(trainExamples / hyper.batchSize) / hyper.gradientAccumulationSteps);
  const totalSteps = Math.min(hyper.maxSteps ?? Infinity, stepsPerEpoch * hyper.epochs);
  const examplesPerStep = hyper.batchSize * hyper.gradientAccumulationSteps;
  const examplesSeen = Math.min(totalSteps * examplesPerStep, trainExamples * hyper.epochs);
  return {
    examples: { train: trainExamples, validation: held },
    tokens: { perExample: exampleTokens, perEpoch: trainExamples * exampleTokens, total: examplesSeen * exampleTokens },
    steps: { perEpoch: stepsPerEpoch, total: totalSteps },
  };
}

/**
 * Memory a run needs, roughly: the base weights, the LoRA parameters with their gradients and
 * AdamW moments (4 × 4 bytes each; every target module counted as hidden × hidden), and the
 * activations of one micro-batch (Korthikanti et al. 2022: s·b·h·(34 + 5·a·s/h) bytes a layer
 * at 16 bits, doubled for float32).
 */
export function memoryNeeded(model: ModelShape, settings: JobSettings) {
  const hidden = firstNumber(model.config, ["hidden_size", "dim", "n_embd", "d_model"], 768);
  const layers = firstNumber(model.config, ["num_hidden_layers", "n_layers", "n_layer"], 12);
  const heads = firstNumber(model.config, ["num_attention_heads", "n_heads", "n_head"], 12);
  const { batchSize, maxSeqLength: seq } = settings.hyperparameters;
  const trainableParameters = 2 * settings.lora.r * hidden * settings.lora.targetModules.length * layers;
  const trainableBytes = trainableParameters * 4 * 4;
  const activationBytes = Math.round(seq * batchSize * hidden * (34 + (5 * heads * seq) / hidden) * layers * 2);
  return { bytes: model.weightsBytes + trainableBytes + activationBytes, weightsBytes: model.weightsBytes, trainableBytes, activationBytes, trainableParameters };
}

/** Bytes of the weight files (.safetensors, .bin) in a model folder; 0 when it cannot be read. */
export async function weightsBytes(folder: string): Promise<number> {
  const entries = await fs.readdir(folder, { withFileTypes: true }).catch(() => []);
  let total = 0;
  for (const entry of entries) {
    if (entry.isFile() && /\.(safetensors|bin)$/.test(entry.name)) total += (await fs.stat(path.join(folder, entry.name))).size;
  }
  return total;
}

/** The median training throughput (tokens/s) the newest jobs of a model reported, and how many did. */
export async function measuredThroughput(prisma: PrismaClient, baseModelId: string): Promise<{ tokensPerSecond: number; jobs: number } | undefined> {
  const rows = await prisma.$queryRawUnsafe<{ tps: number }[]>(
    `SELECT (progress->>'tokensPerSecond')::float8 AS tps FROM "Job"
     WHERE "baseModelId" = $1 AND jsonb_typeof(progress->'tokensPerSecond') = 'number' AND (progress->>'tokensPerSecond')::float8 > 0
     ORDER BY "updatedAt" DESC LIMIT ${THROUGHPUT_SAMPLE}`,
    baseModelId,
  );
  if (rows.length === 0) return undefined;
  const sorted = rows.map((row) => Number(row.tps)).sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  const median = sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
  return { tokensPerSecond: median, jobs: sorted.length };
}
