// POST /v1/adapters/compose: combines adapters trained on one base model into a new one, as PEFT's
// add_weighted_adapter does (linear, cat, svd; services/trainer/lora-compose.ts). Composing and
// evaluating are the worker's work: the request becomes a job whose result is an ordinary adapter,
// evaluated on each source job's validation set (metrics source_<n>.<metric>, n from 1 in order).
import type { FastifyInstance } from "fastify";
import type { Queue } from "bullmq";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import { DEFAULT_PRIORITY, enqueueFineTune, type FineTunePayload } from "../../common/queue.ts";
import { COMPOSITION_TYPES, LORA_SETTINGS, type CompositionType } from "../../trainer/index.ts";
import { jobView } from "../job-view.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses } from "../schemas.ts";

export interface ComposeRoutesOptions {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  config: { enqueueTimeoutMs: number; jobMaxAttempts: number };
}

const MAX_SOURCES = 8;
const uuid = { type: "string", format: "uuid" } as const;

const composeBody = {
  type: "object",
  additionalProperties: false,
  required: ["adapterIds", "weights"],
  properties: {
    adapterIds: { type: "array", minItems: 1, maxItems: MAX_SOURCES, uniqueItems: true, items: uuid, description: "adapters trained on one base model, for one task" },
    weights: { type: "array", minItems: 1, maxItems: MAX_SOURCES, items: { type: "number", minimum: -100, maximum: 100 }, description: "one per adapter, in order" },
    type: { type: "string", enum: [...COMPOSITION_TYPES], default: "svd", description: "as PEFT's combination_type (its default is svd); linear needs one rank and weights ≥ 0" },
    svdRank: { type: "integer", minimum: 1, maximum: LORA_SETTINGS.r.maximum, description: "svd only: the new rank (default: the largest source rank)" },
    metadata: { type: "object", maxProperties: 16, propertyNames: { minLength: 1, maxLength: 64 }, additionalProperties: { type: "string", maxLength: 512 }, default: {} },
  },
} as const;

interface ComposeBody {
  adapterIds: string[];
  weights: number[];
  type: CompositionType;
  svdRank?: number;
  metadata: Record<string, string>;
}

const invalid = (status: number, code: string, path: string, message: string) => new AppError(status, code, message, [{ path, message }]);

export async function composeRoutes(app: FastifyInstance, { prisma, queue, config }: ComposeRoutesOptions): Promise<void> {
  app.post(
    "/v1/adapters/compose",
    {
      schema: {
        tags: ["adapters"],
        summary: "Compose adapters into a new one (linear, cat or svd, weights per adapter)",
        description:
          "201: a composition job, queued (202: stored, queued later by the reconciler). Once it has succeeded, its `adapterId` is an ordinary adapter: predict, generate, download. Its metrics are `source_<n>.<metric>` on each source job's validation set.",
        body: composeBody,
        response: { 201: { $ref: "Job#" }, 202: { $ref: "Job#" }, ...errorResponses(400, 401, 422, 429) },
      },
    },
    async (request, reply) => {
      const body = request.body as ComposeBody;
      const tenantId = tenantOf(request);
      if (body.weights.length !== body.adapterIds.length) throw invalid(400, "validation_failed", "body.weights", `${body.adapterIds.length} adapters need ${body.adapterIds.length} weights, not ${body.weights.length}`);
      const type: CompositionType = body.adapterIds.length === 1 ? "linear" : body.type;
      if (body.svdRank !== undefined && type !== "svd") throw invalid(400, "validation_failed", "body.svdRank", "svdRank is only for type svd");
      const rows = await prisma.adapter.findMany({
        where: { id: { in: body.adapterIds }, tenantId },
        include: { job: { include: { trainDataset: { select: { deletedAt: true } }, validationDataset: { select: { deletedAt: true } } } } },
      });
      const missing = body.adapterIds.filter((id) => !rows.some((row) => row.id === id));
      if (missing.length) throw new AppError(422, "invalid_reference", "the composition names adapters that do not exist", missing.map((id) => ({ path: "body.adapterIds", message: `no adapter ${id}` })));
      const sources = body.adapterIds.map((id) => rows.find((row) => row.id === id)!);
      const [first] = sources;
      for (const source of sources) {
        if (source.baseModelId !== first.baseModelId || source.task !== first.task) {
          throw invalid(422, "incompatible_adapters", "body.adapterIds", `adapters must share a base model and task: ${first.id} is ${first.baseModelId} ${first.task}, ${source.id} is ${source.baseModelId} ${source.task}`);
        }
        if (source.job.trainDataset.deletedAt || source.job.validationDataset?.deletedAt) {
          throw invalid(422, "invalid_reference", "body.adapterIds", `adapter ${source.id}'s training data was deleted: its validation set cannot be rebuilt`);
        }
      }
      if (type === "linear" && new Set(sources.map((source) => source.rank)).size > 1) throw invalid(422, "incompatible_adapters", "body.type", "linear composition needs adapters of one rank; use cat or svd");
      if (type === "linear" && body.weights.some((weight) => weight < 0)) throw invalid(400, "validation_failed", "body.weights", "linear composition needs weights ≥ 0 (it takes their square roots); use cat or svd");
      const rank = type === "linear" ? first.rank : type === "cat" ? sources.reduce((sum, source) => sum + source.rank, 0) : (body.svdRank ?? Math.max(...sources.map((source) => source.rank)));
      const firstLora = first.job.loraConfig as { dropout?: number };
      const job = await prisma.job.create({
        data: {
          tenantId,
          task: first.task,
          baseModelId: first.baseModelId,
          trainDatasetId: first.job.trainDatasetId,
          validationDatasetId: first.job.validationDatasetId,
          validationSplit: first.job.validationSplit,
          // What the composed adapter will be: lora_alpha = r, as PEFT sets it; targets the union.
          loraConfig: { r: rank, alpha: rank, dropout: firstLora.dropout ?? 0, targetModules: [...new Set(sources.flatMap((source) => source.targetModules))].sort(), useRslora: false },
          hyperparameters: first.job.hyperparameters as object,
          composition: { type, weights: body.weights, svdRank: type === "svd" ? (body.svdRank ?? null) : null, adapterIds: body.adapterIds },
          priority: DEFAULT_PRIORITY,
          metadata: body.metadata,
          maxAttempts: config.jobMaxAttempts,
        },
        include: { adapter: { select: { id: true } } },
      });
      try {
        await enqueueFineTune(queue, job, config.enqueueTimeoutMs);
      } catch (error) {
        request.log.warn({ job: job.id, err: (error as Error).message }, "composition stored but not queued; the reconciler will queue it");
        return reply.code(202).send(jobView(job));
      }
      const enqueued = await prisma.job.update({ where: { id: job.id }, data: { enqueuedAt: new Date() }, include: { adapter: { select: { id: true } } } });
      return reply.code(201).send(jobView(enqueued));
    },
  );
}
