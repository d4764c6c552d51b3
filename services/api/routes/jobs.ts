// Fine-tune jobs. The database row is written first and is the truth; the BullMQ job
// (id = row id) only tells a worker to look at it. If Redis is down at submit time the
// row stays `queued` with enqueuedAt null, the client gets 202, and the worker's
// reconciler (services/common/reconcile.ts) adds it to the queue once Redis is back.
import type { FastifyPluginAsync } from "fastify";
import { isDatabaseUnavailable } from "../../common/db.ts";
import { AppError, notFound } from "../../common/errors.ts";
import { JOB_STATUSES } from "../../common/job-status.ts";
import type { ModelRegistry, Task } from "../../common/models.ts";
import { DEFAULT_PRIORITY, EnqueueBatcher, MAX_PRIORITY, MIN_PRIORITY } from "../../common/queue.ts";
import type { AppDeps } from "../deps.ts";
import { isUniqueViolation, type JobSql } from "../job-sql.ts";
import { JOB_BODY_PLACES, refuseBlockingFindings, type DataQualityPreflight } from "../data-quality.ts";
import { resolveJobSource } from "../job-sources.ts";
import { canonicalHash, resolveSubmission } from "../job-submission.ts";
import { ensureFitsWorker, jobMemoryPlan } from "../estimate.ts";
import { jobView, SerializedJobViews, type JobWithAdapter } from "../job-view.ts";
import { afterCursor, newestFirst, page } from "../pagination.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, pageOf, pageQuery, uuidParams } from "../schemas.ts";
import { HYPERPARAMETER_SETTINGS, LORA_SETTINGS, resolveJobSettings, settingsJsonSchema, TrainingConfigError, type HyperparameterOptions, type LoraOptions } from "../../trainer/index.ts";

export type JobRoutesOptions = Pick<AppDeps, "prisma" | "queue" | "config"> & { models: ModelRegistry; jobSql: JobSql; preflight: DataQualityPreflight };

/** About 1.5 KB each: 10,000 jobs polled at once cost some 15 MB. */
const SERVED_VIEWS_CAPACITY = 10_000;

// Both from the engine's one declaration of job settings (services/trainer/settings.ts): same names,
// ranges, defaults and descriptions as the CLI, and as the engine resolves them.
const loraSchema = settingsJsonSchema(LORA_SETTINGS);
const hyperparametersSchema = settingsJsonSchema(HYPERPARAMETER_SETTINGS);

export const createJobBody = {
  type: "object",
  additionalProperties: false,
  required: ["baseModel", "trainDatasetId"],
  properties: {
    baseModel: { type: "string", minLength: 1, maxLength: 128, description: "id from GET /v1/models" },
    trainDatasetId: { type: "string", format: "uuid" },
    validationDatasetId: { type: "string", format: "uuid" },
    validationSplit: { type: "number", exclusiveMinimum: 0, maximum: 0.5, description: "held-out fraction of the training set (seeded); not with validationDatasetId" },
    task: { type: "string", enum: ["classification", "causal_lm"], description: "inferred from the dataset format when absent" },
    lora: { ...loraSchema, default: {} },
    hyperparameters: { ...hyperparametersSchema, default: {} },
    priority: { type: "integer", minimum: MIN_PRIORITY, maximum: MAX_PRIORITY, default: DEFAULT_PRIORITY, description: "higher runs first" },
    fromCheckpoint: {
      type: "object",
      additionalProperties: false,
      required: ["jobId", "step"],
      properties: { jobId: { type: "string", format: "uuid" }, step: { type: "integer", minimum: 1 } },
      description: "continue another job of this tenant from one of its checkpoints: weights, optimizer state, step and data order (same data, LoRA and data-order settings)",
    },
    fromAdapter: { type: "string", format: "uuid", description: "start from an adapter of this tenant's weights (same base model, task, rank and target modules) instead of a random init" },
    metadata: {
      type: "object",
      maxProperties: 16,
      propertyNames: { minLength: 1, maxLength: 64 },
      additionalProperties: { type: "string", maxLength: 512 },
      default: {},
    },
    acknowledgeDataWarnings: {
      type: "boolean",
      default: false,
      description: "accept the data although its quality report has blocking findings (train/validation leakage or label conflicts past the thresholds); otherwise 422 data_quality",
    },
  },
} as const;

export interface CreateJobBody {
  baseModel: string;
  trainDatasetId: string;
  validationDatasetId?: string;
  validationSplit?: number;
  task?: Task;
  lora: LoraOptions;
  hyperparameters: HyperparameterOptions;
  priority: number;
  metadata: Record<string, string>;
  fromCheckpoint?: { jobId: string; step: number };
  fromAdapter?: string;
  acknowledgeDataWarnings: boolean;
}

const listQuery = {
  ...pageQuery,
  properties: { ...pageQuery.properties, status: { type: "string", enum: [...JOB_STATUSES] } },
} as const;

const idempotencyHeaders = {
  type: "object",
  properties: { "idempotency-key": { type: "string", minLength: 1, maxLength: 200 } },
} as const;

export const jobRoutes: FastifyPluginAsync<JobRoutesOptions> = async (app, { prisma, queue, config, models, jobSql, preflight }) => {
  const withAdapter = { adapter: { select: { id: true } } } as const;
  const enqueuer = new EnqueueBatcher(queue, config.enqueueTimeoutMs);
  const servedViews = new SerializedJobViews(SERVED_VIEWS_CAPACITY);

  async function replayOrConflict(tenantId: string, key: string, requestHash: string): Promise<JobWithAdapter | undefined> {
    const existing = await prisma.job.findUnique({ where: { tenantId_idempotencyKey: { tenantId, idempotencyKey: key } }, include: withAdapter });
    if (!existing) return undefined;
    if (existing.requestHash !== requestHash) {
      throw new AppError(409, "idempotency_conflict", "this Idempotency-Key was used with a different request body");
    }
    return existing;
  }

  app.post(
    "/v1/jobs",
    {
      schema: {
        tags: ["jobs"],
        summary: "Submit a fine-tune job",
        description:
          "201: stored and queued. 422 data_quality: the data quality preflight found blocking findings (see acknowledgeDataWarnings). 202: stored, but Redis did not take it; it stays `queued` and is queued by the worker's reconciler. 200: replay of an earlier request with the same Idempotency-Key and body.",
        headers: idempotencyHeaders,
        body: createJobBody,
        response: { 200: { $ref: "Job#" }, 201: { $ref: "Job#" }, 202: { $ref: "Job#" }, ...errorResponses(400, 401, 409, 422, 429) },
      },
    },
    async (request, reply) => {
      const body = request.body as CreateJobBody;
      const tenantId = tenantOf(request);
      const idempotencyKey = request.headers["idempotency-key"] as string | undefined;
      const requestHash = idempotencyKey ? canonicalHash(body) : null;
      if (idempotencyKey) {
        const replay = await replayOrConflict(tenantId, idempotencyKey, requestHash!);
        if (replay) return reply.code(200).send(jobView(replay));
      }
      const { model, task, train, validation } = await resolveSubmission({ ...body, targetModules: body.lora.targetModules }, tenantId, models, jobSql);
      // Stored resolved, so the job row says exactly what the worker trains with.
      let settings;
      try {
        settings = resolveJobSettings(body, model.modelType);
      } catch (error) {
        // Settings valid alone but not together or not for this model (lora.quantization on an encoder).
        if (error instanceof TrainingConfigError) throw new AppError(422, "invalid_settings", error.message, [{ path: "body", message: error.message }]);
        throw error;
      }
      const source = await resolveJobSource(
        body,
        tenantId,
        { baseModelId: model.id, task, trainDatasetId: body.trainDatasetId, validationDatasetId: body.validationDatasetId ?? null, validationSplit: body.validationSplit ?? null, settings },
        prisma,
      );
      ensureFitsWorker(jobMemoryPlan(model.config, settings), config.workerMaxMemory);
      const qualityReport = await preflight.report({ train, validation, model, maxSeqLength: settings.hyperparameters.maxSeqLength });
      refuseBlockingFindings(qualityReport, body.acknowledgeDataWarnings, JOB_BODY_PLACES);

      let job: JobWithAdapter;
      try {
        job = await jobSql.insertJob({
          tenantId,
          task,
          baseModelId: model.id,
          trainDatasetId: body.trainDatasetId,
          validationDatasetId: body.validationDatasetId ?? null,
          validationSplit: body.validationSplit ?? null,
          loraConfig: settings.lora,
          hyperparameters: settings.hyperparameters,
          priority: body.priority,
          metadata: body.metadata,
          idempotencyKey: idempotencyKey ?? null,
          requestHash,
          maxAttempts: config.jobMaxAttempts,
          ...source,
          qualityReport,
        });
      } catch (error) {
        // Two requests with one Idempotency-Key raced: the loser answers as a replay.
        if (idempotencyKey && isUniqueViolation(error)) {
          const replay = await replayOrConflict(tenantId, idempotencyKey, requestHash!);
          if (replay) return reply.code(200).send(jobView(replay));
        }
        throw error;
      }

      try {
        await enqueuer.add(job);
      } catch (error) {
        request.log.warn({ job: job.id, err: (error as Error).message }, "job stored but not queued; the reconciler will queue it");
        return reply.code(202).send(jobView(job));
      }
      // The job is stored and queued: a lost enqueuedAt stamp must not make the client submit it again.
      const enqueuedAt = await jobSql.markEnqueued(job.id).catch((error: unknown) => {
        if (!isDatabaseUnavailable(error)) throw error;
        return null;
      });
      return reply.code(201).send(jobView({ ...job, enqueuedAt }));
    },
  );

  app.get(
    "/v1/jobs",
    { schema: { tags: ["jobs"], summary: "List jobs, newest first", querystring: listQuery, response: { 200: pageOf("Job"), ...errorResponses(400, 401, 429) } } },
    async (request) => {
      const { limit, cursor, status } = request.query as { limit: string; cursor?: string; status?: (typeof JOB_STATUSES)[number] };
      const rows = await prisma.job.findMany({
        where: { tenantId: tenantOf(request), ...(status ? { status } : {}), ...afterCursor(cursor) },
        include: withAdapter,
        orderBy: newestFirst,
        take: Number(limit) + 1,
      });
      return page(rows, Number(limit), jobView);
    },
  );

  app.get(
    "/v1/jobs/:id",
    { schema: { tags: ["jobs"], summary: "Job status, progress and latest metrics", params: uuidParams, response: { 200: { $ref: "Job#" }, ...errorResponses(400, 401, 404, 429) } } },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const tenantId = tenantOf(request);
      const version = await jobSql.jobVersion(id, tenantId);
      if (version === undefined) throw notFound("job", id);
      let body = servedViews.get(id, version);
      if (body === undefined) {
        const found = await jobSql.jobOfTenant(id, tenantId, version);
        if (!found) throw notFound("job", id);
        // The route's own response serializer, so the cached body is exactly what the schema allows.
        body = reply.serialize(jobView(found.job)) as string;
        servedViews.set(id, found.version, body);
      }
      return reply.type("application/json; charset=utf-8").send(body);
    },
  );

  app.get(
    "/v1/jobs/:id/quality",
    {
      schema: {
        tags: ["jobs"],
        summary: "The data quality preflight report the job was accepted with",
        params: uuidParams,
        response: { 200: { anyOf: [{ $ref: "QualityReport#" }, { type: "null" }] }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const job = await prisma.job.findFirst({ where: { id, tenantId: tenantOf(request) }, select: { qualityReport: true } });
      if (!job) throw notFound("job", id);
      return job.qualityReport;
    },
  );

  app.get(
    "/v1/jobs/:id/checkpoints",
    {
      schema: {
        tags: ["jobs"],
        summary: "Checkpoints the worker saved for a job",
        params: uuidParams,
        response: {
          200: {
            type: "object",
            properties: {
              data: {
                type: "array",
                items: { type: "object", properties: { step: { type: "integer" }, sizeBytes: { type: "integer" }, createdAt: { type: "string", format: "date-time" } } },
              },
            },
          },
          ...errorResponses(400, 401, 404, 429),
        },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const job = await prisma.job.findFirst({ where: { id, tenantId: tenantOf(request) }, select: { checkpoints: { orderBy: { step: "asc" } } } });
      if (!job) throw notFound("job", id);
      return { data: job.checkpoints.map((checkpoint) => ({ ...checkpoint, sizeBytes: Number(checkpoint.sizeBytes) })) };
    },
  );
};
