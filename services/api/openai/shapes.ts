// The objects of OpenAI's files and fine-tuning APIs, built from our rows, and their ids: our
// uuids (or event numbers) behind OpenAI's prefixes, so an id says what it names.
import { AppError } from "../../common/errors.ts";
import type { Checkpoint, Dataset, Job, JobEvent } from "../../common/generated/prisma/client.ts";
import { CANONICAL_UUID } from "../../common/db.ts";
import type { Hyperparameters } from "../../trainer/index.ts";
import { checkpointDownloadPath } from "../routes/checkpoint-download.ts";
import { toOpenAiHyperparameters } from "./hyperparameters.ts";

export const FILE_PREFIX = "file-";
export const JOB_PREFIX = "ftjob-";
export const EVENT_PREFIX = "ftevent-";
export const CHECKPOINT_PREFIX = "ftckpt-";

/** Our uuid behind an OpenAI id (the bare uuid is taken too); 404 for anything else. */
export function uuidOf(id: string, prefix: string, what: string): string {
  const bare = id.startsWith(prefix) ? id.slice(prefix.length) : id;
  if (!CANONICAL_UUID.test(bare)) throw new AppError(404, "not_found", `no ${what} ${id}`);
  return bare.toLowerCase();
}

const seconds = (date: Date) => Math.floor(date.getTime() / 1000);

export const fileObject = (row: Dataset) => ({
  id: `${FILE_PREFIX}${row.id}`,
  object: "file" as const,
  bytes: Number(row.sizeBytes),
  created_at: seconds(row.createdAt),
  filename: row.name,
  purpose: "fine-tune" as const,
  status: "processed" as const,
  status_details: null,
});

/**
 * OpenAI's statuses. Validation happens at upload, so a job is never `validating_files`;
 * `cancelling` always ends `cancelled`, and OpenAI answers a cancel with `cancelled` at once.
 */
const STATUS: Record<string, string> = {
  queued: "queued",
  running: "running",
  cancelling: "cancelled",
  paused: "paused",
  succeeded: "succeeded",
  failed: "failed",
  cancelled: "cancelled",
};

/** `ft:<base model>[:<suffix>]:<adapter id>`: the last part is the id for /v1/adapters/:id. */
export const fineTunedModelName = (baseModelId: string, suffix: string | null, adapterId: string) =>
  ["ft", baseModelId, ...(suffix ? [suffix] : []), adapterId].join(":");

/** `ft:<base model>[:<suffix>]:<job id>:ckpt-step-<step>`, OpenAI's form for a checkpoint. */
export const checkpointModelName = (job: Pick<Job, "baseModelId" | "suffix" | "id">, step: number) =>
  ["ft", job.baseModelId, ...(job.suffix ? [job.suffix] : []), `${JOB_PREFIX}${job.id}`, `ckpt-step-${step}`].join(":");

export type JobRow = Job & { adapter: { id: string } | null };

export function jobObject(job: JobRow) {
  const hyperparameters = toOpenAiHyperparameters(job.hyperparameters as unknown as Hyperparameters);
  const progress = job.progress as { tokens?: number; etaMs?: number };
  const error = job.error as { code?: string; message?: string } | null;
  return {
    id: `${JOB_PREFIX}${job.id}`,
    object: "fine_tuning.job" as const,
    created_at: seconds(job.createdAt),
    finished_at: job.finishedAt ? seconds(job.finishedAt) : null,
    status: STATUS[job.status] ?? job.status,
    model: job.baseModelId,
    fine_tuned_model: job.adapter ? fineTunedModelName(job.baseModelId, job.suffix, job.adapter.id) : null,
    organization_id: job.tenantId,
    training_file: `${FILE_PREFIX}${job.trainDatasetId}`,
    validation_file: job.validationDatasetId ? `${FILE_PREFIX}${job.validationDatasetId}` : null,
    result_files: [] as string[],
    hyperparameters,
    method: { type: "supervised" as const, supervised: { hyperparameters } },
    seed: (job.hyperparameters as unknown as Hyperparameters).seed,
    trained_tokens: job.status === "succeeded" ? (progress.tokens ?? null) : null,
    estimated_finish: job.status === "running" && progress.etaMs !== undefined ? Math.ceil((job.updatedAt.getTime() + progress.etaMs) / 1000) : null,
    error: job.status === "failed" && error ? { code: error.code ?? "failed", message: error.message ?? "the job failed", param: null } : null,
    integrations: [] as unknown[],
    metadata: Object.keys(job.metadata as object).length > 0 ? job.metadata : null,
    user_provided_suffix: job.suffix,
    // Ours: the adapter for /v1/adapters/:id once the job succeeded.
    adapter_id: job.adapter?.id ?? null,
  };
}

/** Step and evaluation events carry numbers: OpenAI's `metrics` events; the rest are messages. */
export const eventObject = (event: JobEvent) => ({
  id: `${EVENT_PREFIX}${event.id}`,
  object: "fine_tuning.job.event" as const,
  created_at: seconds(event.createdAt),
  level: event.level === "debug" ? "info" : event.level,
  message: event.message,
  type: event.type === "step" || event.type === "evaluation" ? ("metrics" as const) : ("message" as const),
  data: event.data ?? {},
});

export const checkpointObject = (job: Pick<Job, "baseModelId" | "suffix" | "id">, checkpoint: Checkpoint, metrics: Record<string, number>) => ({
  id: `${CHECKPOINT_PREFIX}${checkpoint.id}`,
  object: "fine_tuning.job.checkpoint" as const,
  created_at: seconds(checkpoint.createdAt),
  fine_tuned_model_checkpoint: checkpointModelName(job, checkpoint.step),
  fine_tuning_job_id: `${JOB_PREFIX}${job.id}`,
  step_number: checkpoint.step,
  metrics: { step: checkpoint.step, ...metrics },
  // Ours: the checkpoint's PEFT adapter as tar.gz.
  download_url: checkpointDownloadPath(job.id, checkpoint.step),
});

/** `limit` as OpenAI takes it: text in the query, 1..max, `fallback` when absent. */
export function limitOf(text: unknown, fallback: number, max: number): number {
  if (text === undefined) return fallback;
  const limit = typeof text === "string" && /^[0-9]{1,6}$/.test(text) ? Number(text) : NaN;
  if (!(limit >= 1 && limit <= max)) throw new AppError(400, "invalid_limit", `limit must be an integer from 1 to ${max}`, [{ path: "limit", message: "out of range" }]);
  return limit;
}

/** A list page as OpenAI's SDK pages it: it asks for the next one `after` the last item's id while has_more. */
export function listPage<T extends { id: string }>(rows: T[], limit: number) {
  const data = rows.slice(0, limit);
  return { object: "list" as const, data, has_more: rows.length > limit, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null };
}
