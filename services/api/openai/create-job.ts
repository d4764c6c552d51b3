// POST /v1/fine_tuning/jobs: OpenAI's job request checked, translated to our settings (with
// "auto" resolved from the training set's size), passed through the data quality preflight, and
// stored and queued as POST /v1/jobs would.
import type { FastifyBaseLogger } from "fastify";
import type { Queue } from "bullmq";
import type { Config } from "../../common/config.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import type { ModelRegistry, Task } from "../../common/models.ts";
import { DEFAULT_PRIORITY, enqueueFineTune, type FineTunePayload } from "../../common/queue.ts";
import { DEFAULT_TARGET_MODULES, HYPERPARAMETER_SETTINGS, resolveJobSettings, TrainingConfigError } from "../../trainer/index.ts";
import { ensureFitsWorker, jobMemoryPlan } from "../estimate.ts";
import { refuseBlockingFindings, type DataQualityPreflight } from "../data-quality.ts";
import { toOurHyperparameters, type OpenAiHyperparameters } from "./hyperparameters.ts";
import { FILE_PREFIX, JOB_PREFIX, uuidOf, type JobRow } from "./shapes.ts";

const auto = (schema: object) => ({ anyOf: [{ type: "string", const: "auto" }, schema] });
const hyperparameters = {
  type: "object",
  additionalProperties: false,
  properties: {
    n_epochs: auto({ type: "integer", minimum: 1, maximum: HYPERPARAMETER_SETTINGS.epochs.maximum }),
    batch_size: auto({ type: "integer", minimum: 1, maximum: HYPERPARAMETER_SETTINGS.batchSize.maximum }),
    learning_rate_multiplier: auto({ type: "number", exclusiveMinimum: 0 }),
  },
} as const;

export const createJobBody = {
  type: "object",
  additionalProperties: false,
  required: ["model", "training_file"],
  properties: {
    model: { type: "string", minLength: 1, maxLength: 128 },
    training_file: { type: "string", minLength: 1, maxLength: 100 },
    validation_file: { type: ["string", "null"], maxLength: 100 },
    suffix: { type: ["string", "null"], maxLength: 64, pattern: "^[A-Za-z0-9_.-]*$" },
    seed: { type: ["integer", "null"], minimum: 0, maximum: HYPERPARAMETER_SETTINGS.seed.maximum },
    metadata: { type: ["object", "null"], maxProperties: 16, propertyNames: { minLength: 1, maxLength: 64 }, additionalProperties: { type: "string", maxLength: 512 } },
    hyperparameters,
    method: {
      type: "object",
      required: ["type"],
      properties: {
        type: { type: "string", enum: ["supervised", "dpo", "reinforcement"] },
        supervised: { type: "object", additionalProperties: false, properties: { hyperparameters } },
      },
    },
    integrations: { type: ["array", "null"], maxItems: 0, description: "not supported: empty or absent" },
  },
} as const;

export interface CreateJobRequest {
  model: string;
  training_file: string;
  validation_file?: string | null;
  suffix?: string | null;
  seed?: number | null;
  metadata?: Record<string, string> | null;
  hyperparameters?: OpenAiHyperparameters;
  method?: { type: string; supervised?: { hyperparameters?: OpenAiHyperparameters } };
}

export interface CreateJobDeps {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  config: Config;
  models: ModelRegistry;
  preflight: DataQualityPreflight;
}

/** OpenAI's request has no field for it: `metadata.acknowledge_data_warnings: "true"` accepts data with blocking quality findings. */
export const ACKNOWLEDGE_METADATA_KEY = "acknowledge_data_warnings";

const reference = (param: string, message: string) => new AppError(422, "invalid_reference", message, [{ path: param, message }]);

export async function createOpenAiJob(deps: CreateJobDeps, tenantId: string, body: CreateJobRequest, log: FastifyBaseLogger): Promise<JobRow> {
  const { prisma, queue, config, models, preflight } = deps;
  if (body.method && body.method.type !== "supervised") {
    throw new AppError(400, "unsupported_method", `method ${body.method.type} is not supported; only supervised fine-tuning`, [{ path: "method.type", message: "must be supervised" }]);
  }
  if (body.hyperparameters && body.method?.supervised?.hyperparameters) {
    throw new AppError(400, "invalid_hyperparameters", "give hyperparameters in method.supervised.hyperparameters or at the top level, not both", [{ path: "hyperparameters", message: "given twice" }]);
  }
  const trainId = uuidOf(body.training_file, FILE_PREFIX, "file");
  const validationId = body.validation_file ? uuidOf(body.validation_file, FILE_PREFIX, "file") : undefined;
  const [model, datasets] = await Promise.all([
    models.get(body.model),
    prisma.dataset.findMany({ where: { id: { in: [trainId, ...(validationId ? [validationId] : [])] }, tenantId, deletedAt: null } }),
  ]);
  const train = datasets.find((row) => row.id === trainId);
  if (!train) throw reference("training_file", `no file ${body.training_file}`);
  const validation = validationId ? datasets.find((row) => row.id === validationId) : undefined;
  if (validationId && !validation) throw reference("validation_file", `no file ${body.validation_file}`);
  if (!model) throw reference("model", `no base model ${body.model} in the model directory`);
  const task: Task = train.format === "classification" ? "classification" : "causal_lm";
  if (validation && validation.format !== train.format) throw reference("validation_file", `the validation file is ${validation.format}, the training file ${train.format}`);
  if (!model.tasks.includes(task)) throw reference("model", `${model.id} (${model.architecture}) does not support ${task}; it supports ${model.tasks.join(", ") || "nothing known"}`);
  if (!DEFAULT_TARGET_MODULES[model.modelType]) throw reference("model", `no default target modules for model_type ${model.modelType}; use POST /v1/jobs and name them`);

  const given = body.method?.supervised?.hyperparameters ?? body.hyperparameters ?? {};
  let settings;
  try {
    settings = resolveJobSettings({ hyperparameters: toOurHyperparameters(given, train.rows, body.seed ?? undefined) }, model.modelType);
  } catch (error) {
    if (error instanceof TrainingConfigError) throw new AppError(400, "invalid_hyperparameters", error.message, [{ path: "hyperparameters", message: error.message }]);
    throw error;
  }
  ensureFitsWorker(jobMemoryPlan(model.config, settings), config.workerMaxMemory);
  const qualityReport = await preflight.report({ train, validation, model, maxSeqLength: settings.hyperparameters.maxSeqLength });
  refuseBlockingFindings(qualityReport, body.metadata?.[ACKNOWLEDGE_METADATA_KEY] === "true", {
    train: "training_file",
    validation: "validation_file",
    acknowledge: `metadata.${ACKNOWLEDGE_METADATA_KEY}: "true"`,
  });
  const job = await prisma.job.create({
    data: {
      tenantId,
      task,
      baseModelId: model.id,
      trainDatasetId: train.id,
      validationDatasetId: validation?.id ?? null,
      loraConfig: settings.lora as object,
      hyperparameters: settings.hyperparameters as object,
      priority: DEFAULT_PRIORITY,
      metadata: body.metadata ?? {},
      suffix: body.suffix || null,
      maxAttempts: config.jobMaxAttempts,
      qualityReport: qualityReport as object,
    },
    include: { adapter: { select: { id: true } } },
  });
  await prisma.jobEvent.create({ data: { jobId: job.id, type: "created", message: `Created fine-tuning job: ${JOB_PREFIX}${job.id}` } });
  try {
    await enqueueFineTune(queue, job, config.enqueueTimeoutMs);
  } catch (error) {
    log.warn({ job: job.id, err: (error as Error).message }, "job stored but not queued; the reconciler will queue it");
    return job;
  }
  return prisma.job.update({ where: { id: job.id }, data: { enqueuedAt: new Date() }, include: { adapter: { select: { id: true } } } }).catch(() => job);
}
