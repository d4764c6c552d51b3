// Adapter size search: POST /v1/sweeps trains one ordinary child job per (target-module set, rank);
// GET reports the table, the pick (the smallest adapter within tolerance of the best) and its
// reason; chart.svg draws the metric against adapter size; cancel cancels every unfinished child.
import type { FastifyInstance } from "fastify";
import { AppError, notFound } from "../../common/errors.ts";
import { isFinished } from "../../common/job-status.ts";
import { LORA_SETTINGS, settingsJsonSchema } from "../../trainer/index.ts";
import { cancelJob } from "../job-actions.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";
import { renderSweepChart } from "../sweeps/chart.ts";
import { createSweep, DEFAULT_SWEEP_RANKS, DEFAULT_SWEEP_TOLERANCE, loadSweep, type CreateSweepBody, type CreateSweepDeps } from "../sweeps/create.ts";
import { chartPoints, decide, sweepRows, sweepView } from "../sweeps/view.ts";
import { createJobBody } from "./jobs.ts";

export type SweepRoutesOptions = CreateSweepDeps;

// The sweep sets rank, alpha and target modules per child; the other LoRA settings are shared.
const { r: rankSetting, alpha: alphaSetting, targetModules: targetModulesSetting, ...sharedLora } = LORA_SETTINGS;
const targetModulesSchema = (settingsJsonSchema({ targetModules: targetModulesSetting }) as { properties: Record<string, object> }).properties.targetModules;

const { baseModel, trainDatasetId, validationDatasetId, validationSplit, task, hyperparameters, priority } = createJobBody.properties;
const createSweepBody = {
  type: "object",
  additionalProperties: false,
  required: ["baseModel", "trainDatasetId"],
  properties: {
    // The job fields every child shares, as POST /v1/jobs declares them; a sweep needs validation data.
    baseModel, trainDatasetId, validationDatasetId, validationSplit, task, hyperparameters, priority,
    ranks: {
      type: "array",
      minItems: 1,
      maxItems: 12,
      uniqueItems: true,
      items: { type: "integer", minimum: rankSetting.minimum, maximum: rankSetting.maximum },
      default: DEFAULT_SWEEP_RANKS,
      description: "one child job per rank (and per target-module set)",
    },
    alphaPolicy: { type: "string", enum: ["2r", "fixed"], default: "2r", description: '"2r": alpha = 2 × rank; "fixed": every child uses `alpha`' },
    alpha: { type: "number", exclusiveMinimum: 0, maximum: alphaSetting.maximum, description: `with alphaPolicy "fixed" (default ${alphaSetting.default})` },
    targetModuleSets: { type: "array", minItems: 1, maxItems: 4, items: targetModulesSchema, description: "each set is tried with every rank; default: the model's default targets" },
    metric: { type: "string", description: "the primary validation metric: classification macro_f1 (default), accuracy or loss; causal_lm loss (default), perplexity or next_token_accuracy" },
    tolerance: { type: "number", minimum: 0, maximum: 1, default: DEFAULT_SWEEP_TOLERANCE, description: "relative: the pick is the smallest adapter whose metric is within tolerance × |best| of the best" },
    lora: { ...settingsJsonSchema(sharedLora), default: {} },
    acknowledgeDataWarnings: createJobBody.properties.acknowledgeDataWarnings,
    metadata: { type: "object", maxProperties: 15, propertyNames: { minLength: 1, maxLength: 64 }, additionalProperties: { type: "string", maxLength: 512 }, default: {} },
  },
} as const;

const numberOrNull = { type: ["number", "null"] };
const sweepSchema = {
  type: "object",
  properties: {
    id: { type: "string" },
    status: { type: "string", enum: ["running", "succeeded", "failed", "cancelled"] },
    task: { type: "string" },
    baseModel: { type: "string" },
    metric: { type: "string" },
    higherIsBetter: { type: "boolean" },
    tolerance: { type: "number" },
    ranks: { type: "array", items: { type: "integer" } },
    alphaPolicy: { type: "string" },
    targetModuleSets: { type: "array", items: { type: "array", items: { type: "string" } } },
    table: {
      type: "array",
      items: {
        type: "object",
        properties: {
          jobId: { type: "string" },
          status: { type: "string" },
          rank: { type: "integer" },
          alpha: { type: "number" },
          targetModules: { type: "array", items: { type: "string" } },
          adapterId: { type: ["string", "null"] },
          trainableParameters: numberOrNull,
          adapterBytes: numberOrNull,
          trainingMs: numberOrNull,
          metrics: { type: "object", additionalProperties: { type: "number" } },
        },
      },
    },
    pick: {
      type: ["object", "null"],
      properties: { jobId: { type: "string" }, adapterId: { type: ["string", "null"] }, bestJobId: { type: "string" }, value: { type: "number" }, best: { type: "number" }, reason: { type: "string" } },
    },
    reason: { type: "string" },
    createdAt: { type: "string", format: "date-time" },
  },
} as const;

export async function sweepRoutes(app: FastifyInstance, deps: SweepRoutesOptions): Promise<void> {
  const { prisma } = deps;
  async function sweepOf(id: string, tenantId: string) {
    const sweep = await loadSweep(prisma, id, tenantId);
    if (!sweep) throw notFound("sweep", id);
    return sweep;
  }

  app.post(
    "/v1/sweeps",
    {
      schema: {
        tags: ["sweeps"],
        summary: "Search adapter sizes: one ordinary job per rank and target-module set",
        body: createSweepBody,
        response: { 201: sweepSchema, ...errorResponses(400, 401, 422, 429) },
      },
    },
    async (request, reply) => reply.code(201).send(sweepView(await createSweep(deps, tenantOf(request), request.body as CreateSweepBody, request.log))),
  );

  app.get(
    "/v1/sweeps/:id",
    { schema: { tags: ["sweeps"], summary: "The sweep's table, pick and reason", params: uuidParams, response: { 200: sweepSchema, ...errorResponses(400, 401, 404, 429) } } },
    async (request) => sweepView(await sweepOf((request.params as { id: string }).id, tenantOf(request))),
  );

  app.get(
    "/v1/sweeps/:id/chart.svg",
    {
      schema: {
        tags: ["sweeps"],
        summary: "The validation metric against adapter size, the pick ringed (SVG)",
        params: uuidParams,
        produces: ["image/svg+xml"],
        response: { 200: { type: "string" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request, reply) => {
      const sweep = await sweepOf((request.params as { id: string }).id, tenantOf(request));
      const rows = sweepRows(sweep);
      const { pick } = decide(sweep, rows);
      const svg = renderSweepChart(chartPoints(sweep, rows), sweep.metric, pick?.jobId, `sweep ${sweep.id}: ${sweep.metric} by adapter size`);
      return reply.type("image/svg+xml; charset=utf-8").send(svg);
    },
  );

  app.post(
    "/v1/sweeps/:id/cancel",
    {
      schema: {
        tags: ["sweeps"],
        summary: "Cancel every unfinished job of the sweep",
        description: "Queued and paused children are cancelled at once, running ones become `cancelling`; finished children are left as they are.",
        params: uuidParams,
        response: { 200: sweepSchema, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const tenantId = tenantOf(request);
      const { id } = request.params as { id: string };
      const sweep = await sweepOf(id, tenantId);
      for (const job of sweep.jobs.filter((child) => !isFinished(child.status))) {
        // A child that finished since we read it answers 409 job_finished: nothing left to cancel.
        await cancelJob(deps, tenantId, job.id, request.log).catch((error: unknown) => {
          if (!(error instanceof AppError && error.code === "job_finished")) throw error;
        });
      }
      return sweepView(await sweepOf(id, tenantId));
    },
  );
}
