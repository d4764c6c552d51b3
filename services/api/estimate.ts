// What a job would cost before it runs: examples, tokens and steps counted the way the engine
// counts them (services/trainer/loop.ts), a duration from the throughput workers measured for the
// model, and the memory it needs as the engine plans it (services/trainer/memory-plan.ts), checked
// against WORKER_MAX_MEMORY at submission. Every rule and constant is documented in services/api/README.md.
import type { PrismaClient } from "../common/db.ts";
import { AppError } from "../common/errors.ts";
import type { BaseModelInfo } from "../common/models.ts";
import {
  formatBytes,
  ModelConfigError,
  planTrainingMemory,
  resolveJobSettings,
  TrainingConfigError,
  WEIGHT_STORAGE_MODES,
  type JobSettings,
  type MemoryPlan,
  type WeightStorage,
} from "../trainer/index.ts";

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

/** The weight storage a job's resolved LoRA settings ask for (lora.quantization, lora.doubleQuant); "none" when they name none. */
export function weightStorageOf(lora: object): { storage: WeightStorage; doubleQuant: boolean } {
  const { quantization, doubleQuant } = lora as { quantization?: unknown; doubleQuant?: unknown };
  const storage = (WEIGHT_STORAGE_MODES as readonly unknown[]).includes(quantization) ? (quantization as WeightStorage) : "none";
  return { storage, doubleQuant: doubleQuant === true };
}

/**
 * The engine's memory plan of a job (services/trainer/memory-plan.ts), or undefined when the model's
 * config.json does not describe a model the engine can plan (the worker then fails on the same config).
 */
export function jobMemoryPlan(modelConfig: Record<string, unknown>, settings: JobSettings, storage = weightStorageOf(settings.lora)): MemoryPlan | undefined {
  const { lora, hyperparameters } = settings;
  try {
    return planTrainingMemory(modelConfig, {
      r: lora.r, targetModules: lora.targetModules, batchSize: hyperparameters.batchSize, maxSeqLength: hyperparameters.maxSeqLength,
      gradientCheckpointing: hyperparameters.gradientCheckpointing, ...storage,
    });
  } catch (error) {
    if (error instanceof ModelConfigError) return undefined;
    throw error;
  }
}

/** GET /v1/models: a model's plan in every storage mode, for the default job settings; null when it cannot be planned. */
export function modelMemoryEstimates(model: BaseModelInfo) {
  let settings: JobSettings;
  try {
    settings = resolveJobSettings({}, model.modelType);
  } catch (error) {
    if (error instanceof TrainingConfigError) return null;
    throw error;
  }
  const byStorage: Partial<Record<WeightStorage, MemoryPlan>> = {};
  for (const storage of WEIGHT_STORAGE_MODES) {
    const plan = jobMemoryPlan(model.config, settings, { storage, doubleQuant: false });
    if (!plan) return null;
    byStorage[storage] = plan;
  }
  const { lora, hyperparameters } = settings;
  return { settings: { r: lora.r, targetModules: lora.targetModules, batchSize: hyperparameters.batchSize, maxSeqLength: hyperparameters.maxSeqLength }, byStorage };
}

/** 422 insufficient_memory, before anything is stored or queued, when a job's plan exceeds WORKER_MAX_MEMORY (unset: no limit). */
export function ensureFitsWorker(plan: MemoryPlan | undefined, limitBytes: number | undefined): void {
  if (!plan || limitBytes === undefined || plan.bytes <= limitBytes) return;
  const message =
    `this job needs an estimated ${formatBytes(plan.bytes)} of memory (${plan.storage} weights ${formatBytes(plan.weightsBytes)}, ` +
    `activations ${formatBytes(plan.activationBytes)}) but the limit for one worker is ${formatBytes(limitBytes)} (WORKER_MAX_MEMORY): ` +
    `lower hyperparameters.batchSize or maxSeqLength, or choose a smaller model`;
  throw new AppError(422, "insufficient_memory", message, [{ path: "body", message: `estimate ${plan.bytes} bytes > limit ${limitBytes} bytes` }]);
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
