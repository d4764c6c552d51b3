// OpenAI's /v1/fine_tuning/jobs over our jobs table and queue: create, list (cursor pages the
// SDK auto-pages), retrieve, cancel, pause, resume, events and checkpoints; job ids are `ftjob-<job id>`.
import type { FastifyInstance } from "fastify";
import { AppError } from "../../common/errors.ts";
import { cancelJob, jobOfTenant, pauseJob, resumeJob } from "../job-actions.ts";
import { tenantOf } from "../plugins/auth.ts";
import { createJobBody, createOpenAiJob, type CreateJobDeps, type CreateJobRequest } from "./create-job.ts";
import { CHECKPOINT_PREFIX, checkpointObject, EVENT_PREFIX, eventObject, JOB_PREFIX, jobObject, limitOf, listPage, uuidOf } from "./shapes.ts";

const MAX_PAGE = 100;
const DEFAULT_PAGE = 20;
const METADATA_QUERY = /^metadata\[(.{1,64})\]$/;

export async function openAiJobRoutes(app: FastifyInstance, deps: CreateJobDeps): Promise<void> {
  const { prisma } = deps;

  const jobOf = async (tenantId: string, jobId: string) => {
    const job = await jobOfTenant(prisma, uuidOf(jobId, JOB_PREFIX, "fine-tuning job"), tenantId);
    if (!job) throw new AppError(404, "not_found", `no fine-tuning job ${jobId}`);
    return job;
  };
  const jobIdParam = (params: unknown) => (params as { jobId: string }).jobId;

  app.post("/v1/fine_tuning/jobs", { schema: { hide: true, body: createJobBody } }, async (request) =>
    jobObject(await createOpenAiJob(deps, tenantOf(request), request.body as CreateJobRequest, request.log)),
  );

  app.get("/v1/fine_tuning/jobs", { schema: { hide: true } }, async (request) => {
    const query = request.query as Record<string, string | undefined>;
    const limit = limitOf(query.limit, DEFAULT_PAGE, MAX_PAGE);
    const tenantId = tenantOf(request);
    const after = query.after !== undefined ? await jobOf(tenantId, query.after) : undefined;
    // The SDK sends metadata filters as metadata[key]=value.
    const metadata = Object.entries(query).flatMap(([key, value]) => {
      const match = METADATA_QUERY.exec(key);
      return match && typeof value === "string" ? [{ metadata: { path: [match[1]], equals: value } }] : [];
    });
    const rows = await prisma.job.findMany({
      where: {
        tenantId,
        AND: metadata,
        ...(after ? { OR: [{ createdAt: { lt: after.createdAt } }, { createdAt: after.createdAt, id: { lt: after.id } }] } : {}),
      },
      include: { adapter: { select: { id: true } } },
      orderBy: [{ createdAt: "desc" }, { id: "desc" }],
      take: limit + 1,
    });
    return listPage(rows.map(jobObject), limit);
  });

  app.get("/v1/fine_tuning/jobs/:jobId", { schema: { hide: true } }, async (request) => jobObject(await jobOf(tenantOf(request), jobIdParam(request.params))));

  app.post("/v1/fine_tuning/jobs/:jobId/cancel", { schema: { hide: true } }, async (request) => {
    const job = await jobOf(tenantOf(request), jobIdParam(request.params));
    return jobObject((await cancelJob(deps, job.tenantId, job.id, request.log)).job);
  });

  app.post("/v1/fine_tuning/jobs/:jobId/pause", { schema: { hide: true } }, async (request) => {
    const job = await jobOf(tenantOf(request), jobIdParam(request.params));
    return jobObject((await pauseJob(deps, job.tenantId, job.id, request.log)).job);
  });

  app.post("/v1/fine_tuning/jobs/:jobId/resume", { schema: { hide: true } }, async (request) => {
    const job = await jobOf(tenantOf(request), jobIdParam(request.params));
    return jobObject(await resumeJob(deps, job.tenantId, job.id, request.log));
  });

  app.get("/v1/fine_tuning/jobs/:jobId/events", { schema: { hide: true } }, async (request) => {
    const query = request.query as { after?: string; limit?: string };
    const limit = limitOf(query.limit, DEFAULT_PAGE, MAX_PAGE);
    const job = await jobOf(tenantOf(request), jobIdParam(request.params));
    let before: bigint | undefined;
    if (query.after !== undefined) {
      const number = query.after.startsWith(EVENT_PREFIX) ? query.after.slice(EVENT_PREFIX.length) : query.after;
      if (!/^[0-9]{1,18}$/.test(number)) throw new AppError(400, "invalid_cursor", `after must be an event id, got ${query.after}`, [{ path: "after", message: "not an event id" }]);
      before = BigInt(number);
    }
    // Newest first, as OpenAI lists them; the next page continues with older events.
    const rows = await prisma.jobEvent.findMany({
      where: { jobId: job.id, ...(before !== undefined ? { id: { lt: before } } : {}) },
      orderBy: { id: "desc" },
      take: limit + 1,
    });
    return listPage(rows.map(eventObject), limit);
  });

  app.get("/v1/fine_tuning/jobs/:jobId/checkpoints", { schema: { hide: true } }, async (request) => {
    const query = request.query as { after?: string; limit?: string };
    const limit = limitOf(query.limit, 10, MAX_PAGE);
    const job = await jobOf(tenantOf(request), jobIdParam(request.params));
    let beforeStep: number | undefined;
    if (query.after !== undefined) {
      const after = await prisma.checkpoint.findFirst({ where: { id: uuidOf(query.after, CHECKPOINT_PREFIX, "checkpoint"), jobId: job.id } });
      if (!after) throw new AppError(404, "not_found", `no checkpoint ${query.after} of this job`);
      beforeStep = after.step;
    }
    const [rows, evaluations] = await Promise.all([
      prisma.checkpoint.findMany({
        where: { jobId: job.id, storageKey: { not: "" }, ...(beforeStep !== undefined ? { step: { lt: beforeStep } } : {}) },
        orderBy: { step: "desc" },
        take: limit + 1,
      }),
      prisma.jobEvent.findMany({ where: { jobId: job.id, type: "evaluation" }, select: { data: true } }),
    ]);
    // Validation metrics of the evaluation at a checkpoint's step, named as OpenAI names them (valid_loss, ...).
    const metricsAt = new Map<number, Record<string, number>>();
    for (const { data } of evaluations) {
      const { step, metrics } = (data ?? {}) as { step?: number; metrics?: Record<string, number> };
      if (step !== undefined && metrics) metricsAt.set(step, Object.fromEntries(Object.entries(metrics).map(([name, value]) => [`valid_${name}`, value])));
    }
    return listPage(rows.map((row) => checkpointObject(job, row, metricsAt.get(row.step) ?? {})), limit);
  });
}
