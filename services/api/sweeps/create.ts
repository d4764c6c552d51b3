// POST /v1/sweeps: one child job per (target-module set, rank), each checked and resolved as
// POST /v1/jobs checks and resolves a job, stored with the Sweep row in one transaction, then
// queued. Children are ordinary jobs: any worker takes them, so they run in parallel across workers.
import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger } from "fastify";
import type { Queue } from "bullmq";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import type { ModelRegistry, Task } from "../../common/models.ts";
import { enqueueFineTune, type FineTunePayload } from "../../common/queue.ts";
import { LORA_SETTINGS, LOWER_IS_BETTER, resolveJobSettings, TrainingConfigError, type HyperparameterOptions, type LoraOptions } from "../../trainer/index.ts";
import { JOB_BODY_PLACES, refuseBlockingFindings, type DataQualityPreflight } from "../data-quality.ts";
import { ensureFitsWorker, jobMemoryPlan } from "../estimate.ts";
import type { JobSql } from "../job-sql.ts";
import { resolveSubmission } from "../job-submission.ts";
import type { SweepRequestRecord, SweepWithChildren } from "./view.ts";

export const DEFAULT_SWEEP_RANKS = [2, 4, 8, 16, 32];
export const DEFAULT_SWEEP_TOLERANCE = 0.01;
/** The validation metrics each task reports, the default (the pick's primary metric) first. */
export const SWEEP_METRICS: Record<Task, string[]> = {
  classification: ["macro_f1", "accuracy", "loss"],
  causal_lm: ["loss", "perplexity", "next_token_accuracy"],
};

export interface CreateSweepBody {
  baseModel: string;
  trainDatasetId: string;
  validationDatasetId?: string;
  validationSplit?: number;
  task?: Task;
  ranks: number[];
  alphaPolicy: "2r" | "fixed";
  alpha?: number;
  targetModuleSets?: string[][];
  metric?: string;
  tolerance: number;
  lora: Omit<LoraOptions, "r" | "alpha" | "targetModules">;
  hyperparameters: HyperparameterOptions;
  priority: number;
  metadata: Record<string, string>;
  acknowledgeDataWarnings: boolean;
}

export interface CreateSweepDeps {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  config: { enqueueTimeoutMs: number; jobMaxAttempts: number; workerMaxMemory?: number };
  models: ModelRegistry;
  jobSql: JobSql;
  preflight: DataQualityPreflight;
}

const badRequest = (code: string, path: string, message: string) => new AppError(400, code, message, [{ path, message }]);

export async function createSweep(deps: CreateSweepDeps, tenantId: string, body: CreateSweepBody, log: FastifyBaseLogger): Promise<SweepWithChildren> {
  const { prisma, queue, config, models, jobSql, preflight } = deps;
  if (body.validationDatasetId === undefined && body.validationSplit === undefined) {
    throw badRequest("validation_required", "body.validationSplit", "a sweep compares validation metrics: give validationDatasetId or validationSplit");
  }
  if (body.alphaPolicy === "2r" && body.alpha !== undefined) throw badRequest("validation_failed", "body.alpha", 'alpha is only for alphaPolicy "fixed"; "2r" sets alpha to twice each rank');
  const { model, task, train, validation } = await resolveSubmission({ ...body, targetModules: body.targetModuleSets?.[0] }, tenantId, models, jobSql);
  const metric = body.metric ?? SWEEP_METRICS[task][0];
  if (!SWEEP_METRICS[task].includes(metric)) {
    throw badRequest("invalid_metric", "body.metric", `a ${task} job reports ${SWEEP_METRICS[task].join(", ")}; not ${metric}`);
  }
  const fixedAlpha = body.alpha ?? LORA_SETTINGS.alpha.default;
  const configurations = (body.targetModuleSets ?? [undefined]).flatMap((targetModules) =>
    body.ranks.map((r) => {
      try {
        return resolveJobSettings({ lora: { ...body.lora, r, alpha: body.alphaPolicy === "2r" ? 2 * r : fixedAlpha, targetModules }, hyperparameters: body.hyperparameters }, model.modelType);
      } catch (error) {
        if (error instanceof TrainingConfigError) throw badRequest("validation_failed", "body", error.message);
        throw error;
      }
    }),
  );
  // Every child must pass what a job submission checks: the largest configuration's memory, and the data.
  for (const settings of configurations) ensureFitsWorker(jobMemoryPlan(model.config, settings), config.workerMaxMemory);
  const qualityReport = await preflight.report({ train, validation, model, maxSeqLength: configurations[0].hyperparameters.maxSeqLength });
  refuseBlockingFindings(qualityReport, body.acknowledgeDataWarnings, JOB_BODY_PLACES);
  const record: SweepRequestRecord & Record<string, unknown> = {
    baseModel: model.id,
    ranks: body.ranks,
    alphaPolicy: body.alphaPolicy,
    ...(body.alphaPolicy === "fixed" ? { alpha: fixedAlpha } : {}),
    targetModuleSets: body.targetModuleSets ?? [configurations[0].lora.targetModules],
    trainDatasetId: body.trainDatasetId,
    validationDatasetId: body.validationDatasetId ?? null,
    validationSplit: body.validationSplit ?? null,
    hyperparameters: configurations[0].hyperparameters,
  };
  const sweepId = randomUUID();
  const jobIds = configurations.map(() => randomUUID());
  await prisma.$transaction([
    prisma.sweep.create({ data: { id: sweepId, tenantId, task, metric, higherIsBetter: !LOWER_IS_BETTER.includes(metric), tolerance: body.tolerance, request: record as object } }),
    prisma.job.createMany({
      data: configurations.map((settings, index) => ({
        id: jobIds[index],
        tenantId,
        sweepId,
        task,
        baseModelId: model.id,
        trainDatasetId: body.trainDatasetId,
        validationDatasetId: body.validationDatasetId ?? null,
        validationSplit: body.validationSplit ?? null,
        loraConfig: settings.lora as object,
        hyperparameters: settings.hyperparameters as object,
        priority: body.priority,
        metadata: { ...body.metadata, sweepId },
        maxAttempts: config.jobMaxAttempts,
        qualityReport: qualityReport as object,
      })),
    }),
  ]);
  try {
    for (const id of jobIds) await enqueueFineTune(queue, { id, priority: body.priority }, config.enqueueTimeoutMs);
    await prisma.job.updateMany({ where: { id: { in: jobIds } }, data: { enqueuedAt: new Date() } });
  } catch (error) {
    // Stored as queued with enqueuedAt null: the worker's reconciler queues what Redis did not take.
    log.warn({ sweep: sweepId, err: (error as Error).message }, "sweep stored but not all its jobs queued; the reconciler will queue them");
  }
  return loadSweep(prisma, sweepId, tenantId) as Promise<SweepWithChildren>;
}

export const loadSweep = (prisma: PrismaClient, id: string, tenantId: string) =>
  prisma.sweep.findFirst({
    where: { id, tenantId },
    include: { jobs: { include: { adapter: { select: { id: true, trainableParameters: true, sizeBytes: true, files: true } } } } },
  });
