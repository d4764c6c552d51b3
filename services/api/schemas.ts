// JSON schemas shared by several routes, registered once with $id so the OpenAPI
// document names them; each route file holds the schemas only it uses.
import type { FastifyInstance } from "fastify";
import { jobProgressSchema } from "../common/job-progress.ts";
import { JOB_STATUSES } from "../common/job-status.ts";
import { COMPOSITION_TYPES } from "../trainer/index.ts";

export const uuidParams = {
  type: "object",
  required: ["id"],
  additionalProperties: false,
  properties: { id: { type: "string", format: "uuid" } },
} as const;

export const pageQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    // Query values arrive as text and body types are never coerced, so numbers are patterns.
    limit: { type: "string", pattern: "^(100|[1-9][0-9]?)$", default: "20", description: "1 to 100" },
    cursor: { type: "string", maxLength: 200, description: "nextCursor of the previous page" },
  },
} as const;

/** Error responses a route may give, each in the shared error shape; every such route may also answer 503 while Postgres is down. */
export function errorResponses(...statuses: number[]): Record<number, { $ref: string }> {
  return Object.fromEntries([...statuses, 503].map((status) => [status, { $ref: "ErrorResponse#" }]));
}

const nullableString = { type: ["string", "null"] } as const;
const nullableTime = { type: ["string", "null"], format: "date-time" } as const;
const numberMap = { type: "object", additionalProperties: { type: "number" } } as const;

/** services/trainer/data/quality.ts's report: at upload on the dataset, at submission on the job. */
export const qualityReportSchema = {
  $id: "QualityReport",
  type: "object",
  required: ["version", "examples", "findings", "stats"],
  properties: {
    version: { type: "integer", const: 1 },
    examples: { type: "integer" },
    findings: {
      type: "array",
      items: {
        type: "object",
        required: ["code", "severity", "count", "lines", "message"],
        properties: {
          code: {
            type: "string",
            description: "exact_duplicate, near_duplicate, label_conflict, label_imbalance, empty_text, too_long (job preflight), train_validation_leakage (job preflight)",
          },
          severity: { type: "string", enum: ["warning", "blocking"], description: "blocking: a job refuses it unless acknowledgeDataWarnings" },
          count: { type: "integer" },
          lines: { type: "array", items: { type: "integer" }, maxItems: 20, description: "1-based line numbers, ascending, the first 20 found" },
          message: { type: "string" },
          examples: { type: "array", items: {} },
        },
      },
    },
    stats: { type: "object", additionalProperties: true, description: "characters (and, in a job's preflight, tokens) per example; labelCounts; the near-duplicate method" },
  },
} as const;

export const datasetSchema = {
  $id: "Dataset",
  type: "object",
  required: ["id", "name", "format", "rows", "sizeBytes", "sha256", "stats", "createdAt"],
  properties: {
    id: { type: "string", format: "uuid" },
    name: { type: "string" },
    format: { type: "string", enum: ["classification", "completion", "chat"] },
    rows: { type: "integer" },
    sizeBytes: { type: "integer" },
    sha256: { type: "string" },
    stats: {
      type: "object",
      properties: {
        labelCounts: { type: "object", additionalProperties: { type: "integer" }, description: "classification only" },
        length: {
          type: "object",
          description: "characters per example (text; prompt + completion; all message contents)",
          properties: {
            min: { type: "integer" },
            max: { type: "integer" },
            mean: { type: "number" },
            p50: { type: "integer" },
            p90: { type: "integer" },
            p99: { type: "integer" },
            histogram: {
              type: "array",
              items: { type: "object", properties: { upTo: { type: "integer" }, count: { type: "integer" } } },
            },
          },
        },
      },
    },
    qualityReport: { anyOf: [{ $ref: "QualityReport#" }, { type: "null" }], description: "made at upload; null for datasets uploaded before reports existed" },
    createdAt: { type: "string", format: "date-time" },
  },
} as const;

export const baseModelSchema = {
  $id: "BaseModel",
  type: "object",
  required: ["id", "architecture", "modelType", "tasks"],
  properties: {
    id: { type: "string", description: "folder name inside MODELS_DIR" },
    architecture: { type: "string" },
    modelType: { type: "string" },
    tasks: { type: "array", items: { type: "string", enum: ["classification", "causal_lm"] } },
    defaultTargetModules: { type: "array", items: { type: "string" } },
    config: { type: "object", additionalProperties: true, description: "the model's config.json" },
    memory: {
      type: ["object", "null"],
      description: "estimated training memory for the default job settings (`settings`) in each weight storage mode; null when config.json cannot be planned. Rules in services/trainer/README.md",
      properties: {
        settings: { type: "object", properties: { r: { type: "integer" }, targetModules: { type: "array", items: { type: "string" } }, batchSize: { type: "integer" }, maxSeqLength: { type: "integer" } } },
        byStorage: { type: "object", properties: { none: { $ref: "MemoryPlan#" }, int8: { $ref: "MemoryPlan#" }, nf4: { $ref: "MemoryPlan#" } } },
      },
    },
  },
} as const;

const byteCount = { type: "integer", minimum: 0 } as const;

/** The engine's memory plan of a training run (services/trainer/memory-plan.ts). */
export const memoryPlanSchema = {
  $id: "MemoryPlan",
  type: "object",
  required: ["bytes", "storage", "weightsBytes", "trainableParameters", "trainableBytes", "activationBytes", "gradientCheckpointing", "loadingBytes", "overheadBytes"],
  properties: {
    bytes: { ...byteCount, description: "the peak: max(training, loading) plus overhead" },
    storage: { type: "string", enum: ["none", "int8", "nf4"], description: "how the frozen linear weights are held" },
    weightsBytes: byteCount,
    trainableParameters: byteCount,
    trainableBytes: { ...byteCount, description: "LoRA weights, gradients and AdamW's two moments, float32" },
    activationBytes: { ...byteCount, description: "one micro-batch's activations and logits at the step's peak" },
    gradientCheckpointing: { type: "boolean", description: "whether decoder layers are recomputed in the backward (hyperparameters.gradientCheckpointing, auto decided)" },
    loadingBytes: { ...byteCount, description: "the checkpoint decoded to float32 while loading" },
    overheadBytes: { ...byteCount, description: "runtime overhead and fragmentation slack" },
  },
} as const;

export const jobSchema = {
  $id: "Job",
  type: "object",
  required: ["id", "status", "task", "baseModelId", "trainDatasetId", "lora", "hyperparameters", "priority", "metadata", "progress", "attempts", "createdAt"],
  properties: {
    id: { type: "string", format: "uuid" },
    status: { type: "string", enum: [...JOB_STATUSES] },
    task: { type: "string", enum: ["classification", "causal_lm"] },
    baseModelId: { type: "string" },
    trainDatasetId: { type: "string", format: "uuid" },
    validationDatasetId: nullableString,
    validationSplit: { type: ["number", "null"] },
    lora: { type: "object", additionalProperties: true },
    hyperparameters: { type: "object", additionalProperties: true },
    priority: { type: "integer" },
    metadata: { type: "object", additionalProperties: { type: "string" } },
    progress: jobProgressSchema,
    metrics: {
      anyOf: [{ ...numberMap, properties: { report: { type: "object", additionalProperties: true } } }, { type: "null" }],
      description: "latest evaluation metrics; once succeeded, the adapter's, with `report`: the final evaluation's detail, adapter and base side by side",
    },
    error: {
      anyOf: [{ type: "object", properties: { code: { type: "string" }, message: { type: "string" } }, additionalProperties: true }, { type: "null" }],
    },
    attempts: { type: "integer" },
    maxAttempts: { type: "integer" },
    adapterId: nullableString,
    createdAt: { type: "string", format: "date-time" },
    updatedAt: { type: "string", format: "date-time" },
    enqueuedAt: nullableTime,
    startedAt: nullableTime,
    finishedAt: nullableTime,
    cancelRequestedAt: nullableTime,
    estimatedFinish: { ...nullableTime, description: "while running: when the last step is expected, from the worker's latest step report" },
    pauseRequestedAt: { ...nullableTime, description: "set while a running job is asked to pause, until its worker has paused it" },
    fromCheckpoint: {
      anyOf: [{ type: "object", properties: { jobId: { type: "string" }, step: { type: "integer" } } }, { type: "null" }],
      description: "the checkpoint this job continues",
    },
    fromAdapter: { ...nullableString, description: "the adapter whose weights this job started from" },
    sweepId: { ...nullableString, description: "the sweep (POST /v1/sweeps) this job is a child of" },
    composition: {
      anyOf: [
        {
          type: "object",
          properties: { type: { type: "string", enum: [...COMPOSITION_TYPES] }, weights: { type: "array", items: { type: "number" } }, svdRank: { type: ["integer", "null"] }, adapterIds: { type: "array", items: { type: "string" } } },
        },
        { type: "null" },
      ],
      description: "a composition job's (POST /v1/adapters/compose): how it composes which adapters",
    },
  },
} as const;

export const jobEventSchema = {
  $id: "JobEvent",
  type: "object",
  required: ["id", "level", "type", "message", "createdAt"],
  properties: {
    id: { type: "string", description: "increasing within a job; pass as `after`" },
    level: { type: "string", enum: ["debug", "info", "warn", "error"] },
    type: { type: "string" },
    message: { type: "string" },
    data: { anyOf: [{ type: "object", additionalProperties: true }, { type: "null" }] },
    createdAt: { type: "string", format: "date-time" },
  },
} as const;

export const adapterSchema = {
  $id: "Adapter",
  type: "object",
  required: ["id", "jobId", "baseModelId", "task", "format", "rank", "alpha", "targetModules", "files", "sizeBytes", "sha256", "createdAt"],
  properties: {
    id: { type: "string", format: "uuid" },
    jobId: { type: "string", format: "uuid" },
    baseModelId: { type: "string" },
    task: { type: "string" },
    format: { type: "string" },
    rank: { type: "integer" },
    alpha: { type: "number" },
    targetModules: { type: "array", items: { type: "string" } },
    files: {
      type: "array",
      items: { type: "object", properties: { name: { type: "string" }, sizeBytes: { type: "integer" }, sha256: { type: "string" } } },
    },
    sizeBytes: { type: "integer", description: "size of the tar.gz download" },
    sha256: { type: "string", description: "sha256 of the tar.gz download; also its ETag" },
    metrics: { type: "object", additionalProperties: true },
    trainableParameters: { type: ["integer", "null"], description: "every number in adapter_model.safetensors (LoRA A and B, and a classifier's head)" },
    createdAt: { type: "string", format: "date-time" },
  },
} as const;

export function pageOf(itemRef: string) {
  return {
    type: "object",
    required: ["data", "nextCursor"],
    properties: { data: { type: "array", items: { $ref: `${itemRef}#` } }, nextCursor: nullableString },
  } as const;
}

export function registerSharedSchemas(app: FastifyInstance): void {
  for (const schema of [qualityReportSchema, datasetSchema, memoryPlanSchema, baseModelSchema, jobSchema, jobEventSchema, adapterSchema]) app.addSchema(schema);
}
