// Where a new job may start instead of from random LoRA weights: another job's checkpoint, which it
// continues (weights, optimizer moments, step counter and data order), or a finished adapter, whose
// weights (head included) it starts from with a fresh optimizer. Both are checked here against the
// job as submitted, so a mismatch is a 4xx at submit time, not a failed job later.
import type { PrismaClient } from "../common/db.ts";
import { AppError, type ErrorDetail } from "../common/errors.ts";
import type { JobSettings } from "../trainer/index.ts";

export interface JobSourceRequest {
  fromCheckpoint?: { jobId: string; step: number };
  fromAdapter?: string;
}

/** The Job columns that record the source. */
export interface JobSource {
  fromCheckpointJobId: string | null;
  fromCheckpointStep: number | null;
  fromAdapterId: string | null;
}

/** What the new job is, resolved, to compare with its source. */
export interface SubmittedJob {
  baseModelId: string;
  task: string;
  trainDatasetId: string;
  validationDatasetId: string | null;
  validationSplit: number | null;
  settings: JobSettings;
}

/**
 * The hyperparameters that fix the data order and the step count: a continued run must share them
 * (the engine refuses a checkpoint made with others). Everything else (learning rate and schedule,
 * weight decay, clipping, class weights, evaluation and checkpoint cadence, early stopping) may
 * change, and the continuation then follows the new values from the checkpoint's step on.
 */
export const CONTINUATION_HYPERPARAMETERS = ["seed", "batchSize", "epochs", "maxSteps", "gradientAccumulationSteps", "maxSeqLength", "packing", "trainOnInputs"] as const;

export const NO_SOURCE: JobSource = { fromCheckpointJobId: null, fromCheckpointStep: null, fromAdapterId: null };

const same = (a: unknown, b: unknown) => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
const sortedModules = (modules: unknown) => [...((modules as string[] | undefined) ?? [])].sort();

function mismatch(kind: string, problems: ErrorDetail[]): AppError {
  return new AppError(422, "source_mismatch", `the ${kind} was trained differently from this job: ${problems.map((p) => p.message).join("; ")}`, problems);
}

/** The source columns for a submission, or 400 (both given), 404 `source_not_found` / `checkpoint_not_found`, 422 `source_mismatch`. */
export async function resolveJobSource(request: JobSourceRequest, tenantId: string, job: SubmittedJob, prisma: PrismaClient): Promise<JobSource> {
  if (request.fromCheckpoint && request.fromAdapter) {
    throw new AppError(400, "validation_failed", "give fromCheckpoint or fromAdapter, not both", [{ path: "body.fromAdapter", message: "not allowed together with fromCheckpoint" }]);
  }
  if (request.fromCheckpoint) return resolveCheckpoint(request.fromCheckpoint, tenantId, job, prisma);
  if (request.fromAdapter) return resolveAdapter(request.fromAdapter, tenantId, job, prisma);
  return NO_SOURCE;
}

async function resolveCheckpoint({ jobId, step }: { jobId: string; step: number }, tenantId: string, job: SubmittedJob, prisma: PrismaClient): Promise<JobSource> {
  const source = await prisma.job.findFirst({ where: { id: jobId, tenantId } });
  if (!source) throw new AppError(404, "source_not_found", `job ${jobId} not found`, [{ path: "body.fromCheckpoint.jobId", message: `no job ${jobId}` }]);
  const checkpoint = await prisma.checkpoint.findUnique({ where: { jobId_step: { jobId, step } }, select: { id: true } });
  if (!checkpoint) {
    throw new AppError(404, "checkpoint_not_found", `job ${jobId} has no checkpoint at step ${step}`, [{ path: "body.fromCheckpoint.step", message: `no checkpoint at step ${step}` }]);
  }
  const problems: ErrorDetail[] = [];
  const compare = (path: string, theirs: unknown, ours: unknown, what: string) => {
    if (!same(theirs, ours)) problems.push({ path, message: `${what}: ${JSON.stringify(theirs ?? null)} there, ${JSON.stringify(ours ?? null)} here` });
  };
  compare("body.baseModel", source.baseModelId, job.baseModelId, "base model");
  compare("body.task", source.task, job.task, "task");
  compare("body.trainDatasetId", source.trainDatasetId, job.trainDatasetId, "training dataset");
  compare("body.validationDatasetId", source.validationDatasetId, job.validationDatasetId, "validation dataset");
  compare("body.validationSplit", source.validationSplit, job.validationSplit, "validation split");
  const sourceLora = source.loraConfig as Record<string, unknown>;
  // All of LoRA, target modules in their order too: the checkpoint's optimizer state is per parameter.
  for (const [name, value] of Object.entries(job.settings.lora)) compare(`body.lora.${name}`, sourceLora[name], value, `lora.${name}`);
  const sourceHyper = source.hyperparameters as Record<string, unknown>;
  for (const name of CONTINUATION_HYPERPARAMETERS) compare(`body.hyperparameters.${name}`, sourceHyper[name], job.settings.hyperparameters[name], `hyperparameters.${name}`);
  if (problems.length) throw mismatch("checkpoint", problems);
  return { ...NO_SOURCE, fromCheckpointJobId: jobId, fromCheckpointStep: step };
}

async function resolveAdapter(adapterId: string, tenantId: string, job: SubmittedJob, prisma: PrismaClient): Promise<JobSource> {
  const adapter = await prisma.adapter.findFirst({ where: { id: adapterId, tenantId } });
  if (!adapter) throw new AppError(404, "source_not_found", `adapter ${adapterId} not found`, [{ path: "body.fromAdapter", message: `no adapter ${adapterId}` }]);
  const problems: ErrorDetail[] = [];
  if (adapter.baseModelId !== job.baseModelId) problems.push({ path: "body.baseModel", message: `base model: ${adapter.baseModelId} there, ${job.baseModelId} here` });
  if (adapter.task !== job.task) problems.push({ path: "body.task", message: `task: ${adapter.task} there, ${job.task} here` });
  if (adapter.rank !== job.settings.lora.r) problems.push({ path: "body.lora.r", message: `rank: ${adapter.rank} there, ${job.settings.lora.r} here` });
  if (!same(sortedModules(adapter.targetModules), sortedModules(job.settings.lora.targetModules))) {
    problems.push({ path: "body.lora.targetModules", message: `target modules: ${JSON.stringify(sortedModules(adapter.targetModules))} there, ${JSON.stringify(sortedModules(job.settings.lora.targetModules))} here` });
  }
  if (problems.length) throw mismatch("adapter", problems);
  return { ...NO_SOURCE, fromAdapterId: adapterId };
}
