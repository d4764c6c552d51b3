// POST /v1/jobs/estimate: the body of POST /v1/jobs, answered with what the job would cost
// (examples, tokens, steps, duration, memory) and nothing stored or queued.
import type { FastifyInstance } from "fastify";
import type { Config } from "../../common/config.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import type { ModelRegistry } from "../../common/models.ts";
import { resolveJobSettings, TrainingConfigError } from "../../trainer/index.ts";
import { countWork, jobMemoryPlan, measuredThroughput } from "../estimate.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses } from "../schemas.ts";
import { createJobBody, type CreateJobBody } from "./jobs.ts";

const reference = (path: string, message: string) => new AppError(422, "invalid_reference", message, [{ path, message }]);
const count = { type: "integer" } as const;

const estimateResponse = {
  type: "object",
  properties: {
    examples: { type: "object", properties: { train: count, validation: count } },
    tokens: { type: "object", properties: { perExample: count, perEpoch: count, total: count }, description: `estimated: characters / 4 + 2 per example, capped at maxSeqLength` },
    steps: { type: "object", properties: { perEpoch: count, total: count } },
    duration: {
      type: "object",
      properties: {
        seconds: count,
        tokensPerSecond: { type: "number" },
        throughputSource: { type: "string", enum: ["measured", "default"] },
        measuredJobs: count,
      },
    },
    memory: {
      anyOf: [{ type: "null" }, { allOf: [{ $ref: "MemoryPlan#" }, { type: "object", properties: { limitBytes: { type: ["integer", "null"] }, fits: { type: "boolean" } } }] }],
      description: "the engine's plan for this job's settings; limitBytes is WORKER_MAX_MEMORY (null: no limit); null when config.json cannot be planned",
    },
    lora: { type: "object", additionalProperties: true },
    hyperparameters: { type: "object", additionalProperties: true },
  },
} as const;

export async function estimateRoutes(app: FastifyInstance, deps: { prisma: PrismaClient; config: Config; models: ModelRegistry }): Promise<void> {
  const { prisma, config, models } = deps;
  app.post(
    "/v1/jobs/estimate",
    {
      schema: {
        tags: ["jobs"],
        summary: "Estimate a job before running it: examples, tokens, steps, duration and memory",
        description: "Same body as POST /v1/jobs; nothing is stored or queued. The rules are in services/api/README.md.",
        body: createJobBody,
        response: { 200: estimateResponse, ...errorResponses(400, 401, 422, 429) },
      },
    },
    async (request) => {
      const body = request.body as CreateJobBody;
      const tenantId = tenantOf(request);
      if (body.validationDatasetId !== undefined && body.validationSplit !== undefined) {
        throw new AppError(400, "validation_failed", "give validationDatasetId or validationSplit, not both", [{ path: "body.validationSplit", message: "not allowed together with validationDatasetId" }]);
      }
      const [model, train] = await Promise.all([models.get(body.baseModel), prisma.dataset.findFirst({ where: { id: body.trainDatasetId, tenantId, deletedAt: null } })]);
      if (!model) throw reference("body.baseModel", `no base model ${body.baseModel} in the model directory`);
      if (!train) throw reference("body.trainDatasetId", `no dataset ${body.trainDatasetId}`);
      const validation = body.validationDatasetId ? await prisma.dataset.findFirst({ where: { id: body.validationDatasetId, tenantId, deletedAt: null } }) : undefined;
      if (body.validationDatasetId && !validation) throw reference("body.validationDatasetId", `no dataset ${body.validationDatasetId}`);
      let settings;
      try {
        settings = resolveJobSettings(body, model.modelType);
      } catch (error) {
        if (error instanceof TrainingConfigError) throw reference("body.lora.targetModules", error.message);
        throw error;
      }
      const meanChars = (train.stats as { length?: { mean?: number } }).length?.mean ?? 0;
      const work = countWork({ rows: train.rows, meanChars }, body.validationSplit, settings);
      if (validation) work.examples.validation = validation.rows;
      const measured = await measuredThroughput(prisma, model.id);
      const plan = jobMemoryPlan(model.config, settings);
      const tokensPerSecond = measured?.tokensPerSecond ?? config.estimateDefaultTokensPerSecond;
      return {
        ...work,
        duration: {
          seconds: Math.ceil(work.tokens.total / tokensPerSecond),
          tokensPerSecond,
          throughputSource: measured ? "measured" : "default",
          measuredJobs: measured?.jobs ?? 0,
        },
        memory: plan ? { ...plan, limitBytes: config.workerMaxMemory ?? null, fits: config.workerMaxMemory === undefined || plan.bytes <= config.workerMaxMemory } : null,
        lora: settings.lora,
        hyperparameters: settings.hyperparameters,
      };
    },
  );
}
