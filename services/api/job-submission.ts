// What a job submission must pass beyond its JSON schema, which cannot see the database or the
// model directory: the base model and datasets exist for this tenant, the task fits both, and
// LoRA has target modules. Also the request hash that makes Idempotency-Key replays safe.
import { createHash } from "node:crypto";
import { AppError, type ErrorDetail } from "../common/errors.ts";
import type { BaseModelInfo, ModelRegistry, Task } from "../common/models.ts";
import { DEFAULT_TARGET_MODULES } from "../trainer/index.ts";
import type { JobSql, LiveDataset } from "./job-sql.ts";

/** The parts of a submission that name things outside the request. */
export interface SubmissionReferences {
  baseModel: string;
  trainDatasetId: string;
  validationDatasetId?: string;
  validationSplit?: number;
  task?: Task;
  targetModules?: string[];
}

export interface ResolvedSubmission {
  model: BaseModelInfo;
  task: Task;
  train: LiveDataset;
  validation: LiveDataset | undefined;
}

const taskOfFormat = (format: string): Task => (format === "classification" ? "classification" : "causal_lm");

const invalidReference = (path: string, message: string) => new AppError(422, "invalid_reference", message, [{ path, message }]);

/** The same request always hashes the same, whatever order its keys came in. */
export function canonicalHash(value: unknown): string {
  const canonical = (item: unknown): unknown =>
    Array.isArray(item)
      ? item.map(canonical)
      : item && typeof item === "object"
        ? Object.fromEntries(Object.keys(item).sort().map((key) => [key, canonical((item as Record<string, unknown>)[key])]))
        : item;
  return createHash("sha256").update(JSON.stringify(canonical(value))).digest("hex");
}

/**
 * The model and task a submission resolves to, or the error that says what is
 * wrong: 400 for a contradictory request, 422 `invalid_reference` naming every missing reference
 * at once, then the first mismatch between model, datasets and task.
 */
export async function resolveSubmission(
  refs: SubmissionReferences,
  tenantId: string,
  models: ModelRegistry,
  jobSql: JobSql,
): Promise<ResolvedSubmission> {
  if (refs.validationDatasetId !== undefined && refs.validationSplit !== undefined) {
    throw new AppError(400, "validation_failed", "give validationDatasetId or validationSplit, not both", [
      { path: "body.validationSplit", message: "not allowed together with validationDatasetId" },
    ]);
  }
  const datasetIds = [refs.trainDatasetId, ...(refs.validationDatasetId ? [refs.validationDatasetId] : [])];
  const [model, datasets] = await Promise.all([models.get(refs.baseModel), jobSql.liveDatasets(datasetIds, tenantId)]);
  const train = datasets.find((dataset) => dataset.id === refs.trainDatasetId);
  const validation = refs.validationDatasetId ? datasets.find((dataset) => dataset.id === refs.validationDatasetId) : undefined;
  const problems: ErrorDetail[] = [];
  if (!model) problems.push({ path: "body.baseModel", message: `no base model ${refs.baseModel} in the model directory` });
  if (!train) problems.push({ path: "body.trainDatasetId", message: `no dataset ${refs.trainDatasetId}` });
  if (refs.validationDatasetId && !validation) problems.push({ path: "body.validationDatasetId", message: `no dataset ${refs.validationDatasetId}` });
  if (!model || !train || problems.length > 0) throw new AppError(422, "invalid_reference", "the job refers to something that does not exist", problems);

  const task = taskOfFormat(train.format);
  if (refs.task && refs.task !== task) throw invalidReference("body.task", `a ${train.format} dataset trains a ${task} model, not ${refs.task}`);
  if (validation && validation.format !== train.format) {
    throw invalidReference("body.validationDatasetId", `the validation dataset is ${validation.format}, the training dataset ${train.format}`);
  }
  if (!model.tasks.includes(task)) {
    throw invalidReference("body.baseModel", `${model.id} (${model.architecture}) does not support ${task}; it supports ${model.tasks.join(", ") || "nothing known"}`);
  }
  if (!refs.targetModules && !DEFAULT_TARGET_MODULES[model.modelType]) {
    throw invalidReference("body.lora.targetModules", `no default target modules for model_type ${model.modelType}; name them`);
  }
  return { model, task, train, validation };
}
