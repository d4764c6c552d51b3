// What cancel, pause and resume do to a job, whichever API asked: conditional updates, since a
// worker may change the status between our read and our write, each written with its event in
// one transaction. The routes only shape the answer.
import type { FastifyBaseLogger } from "fastify";
import type { Queue } from "bullmq";
import type { PrismaClient } from "../common/db.ts";
import { AppError, notFound } from "../common/errors.ts";
import type { Job } from "../common/generated/prisma/client.ts";
import { isFinished } from "../common/job-status.ts";
import { enqueueFineTune, withRedisTimeout, type FineTunePayload } from "../common/queue.ts";

export interface JobActionDeps {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  config: { enqueueTimeoutMs: number };
}

export type JobWithAdapterId = Job & { adapter: { id: string } | null };
const withAdapter = { adapter: { select: { id: true } } } as const;

export const jobOfTenant = (prisma: PrismaClient, id: string, tenantId: string) => prisma.job.findFirst({ where: { id, tenantId }, include: withAdapter });

/**
 * A queued or paused job is cancelled at once (`immediate`); a running one becomes `cancelling` until its
 * worker stops. 404 for another tenant's job, 409 job_finished for a finished one.
 */
export async function cancelJob(deps: JobActionDeps, tenantId: string, id: string, log: FastifyBaseLogger): Promise<{ job: JobWithAdapterId; immediate: boolean }> {
  const { prisma, queue, config } = deps;
  const now = new Date();
  const cancelled = await prisma.$transaction(async (tx) => {
    const updated = await tx.job.updateMany({
      where: { id, tenantId, status: { in: ["queued", "paused"] } },
      data: { status: "cancelled", cancelRequestedAt: now, finishedAt: now },
    });
    if (updated.count === 1) await tx.jobEvent.create({ data: { jobId: id, type: "cancelled", message: "cancelled before it started" } });
    return updated;
  });
  if (cancelled.count === 1) {
    // If Redis is down the BullMQ job stays; a worker that picks it sees the status and skips it.
    await withRedisTimeout(queue.remove(id), config.enqueueTimeoutMs, "the removal").catch((error: Error) => log.warn({ job: id, err: error.message }, "cancelled job not removed from the queue"));
  } else {
    await prisma.job.updateMany({ where: { id, tenantId, status: "running" }, data: { status: "cancelling", cancelRequestedAt: now } });
  }
  const job = await jobOfTenant(prisma, id, tenantId);
  if (!job) throw notFound("job", id);
  if (job.status === "cancelling") return { job, immediate: false };
  if (job.status === "cancelled" && cancelled.count === 1) return { job, immediate: true };
  throw new AppError(409, "job_finished", `job ${id} has already ${job.status === "cancelled" ? "been cancelled" : job.status}`);
}

/** Why a job cannot be paused or resumed, as a 409. */
function notNow(job: Job, action: "pause" | "resume"): AppError {
  if (job.status === "cancelling") return new AppError(409, "job_cancelling", `job ${job.id} is being cancelled`);
  if (isFinished(job.status)) return new AppError(409, "job_finished", `job ${job.id} has already ${job.status}`);
  return new AppError(409, "job_not_paused", `job ${job.id} is ${job.status}, not paused: nothing to ${action}`);
}

/**
 * A queued job is paused at once (`immediate`, removed from the queue); a running one gets
 * pauseRequestedAt and its worker checkpoints, stops and marks it paused. Pausing a paused job is
 * a no-op; a cancelling or finished one is 409.
 */
export async function pauseJob(deps: JobActionDeps, tenantId: string, id: string, log: FastifyBaseLogger): Promise<{ job: JobWithAdapterId; immediate: boolean }> {
  const { prisma, queue, config } = deps;
  const now = new Date();
  const paused = await prisma.$transaction(async (tx) => {
    const updated = await tx.job.updateMany({ where: { id, tenantId, status: "queued" }, data: { status: "paused", pauseRequestedAt: null } });
    if (updated.count === 1) await tx.jobEvent.create({ data: { jobId: id, type: "paused", message: "paused before it ran" } });
    return updated.count === 1;
  });
  if (paused) {
    // A stale queue entry is harmless: a worker that picks it sees `paused` and leaves the job.
    await withRedisTimeout(queue.remove(id), config.enqueueTimeoutMs, "the removal").catch((error: Error) => log.warn({ job: id, err: error.message }, "paused job not removed from the queue"));
  } else {
    await prisma.job.updateMany({ where: { id, tenantId, status: "running", pauseRequestedAt: null }, data: { pauseRequestedAt: now } });
  }
  const job = await jobOfTenant(prisma, id, tenantId);
  if (!job) throw notFound("job", id);
  if (job.status === "paused") return { job, immediate: true };
  if (job.status === "running" && job.pauseRequestedAt) return { job, immediate: false };
  throw notNow(job, "pause");
}

/**
 * A paused job is queued again (it resumes from its newest checkpoint); a running job that was
 * asked to pause is asked no longer. Anything else is 409.
 */
export async function resumeJob(deps: JobActionDeps, tenantId: string, id: string, log: FastifyBaseLogger): Promise<JobWithAdapterId> {
  const { prisma, queue, config } = deps;
  const resumed = await prisma.$transaction(async (tx) => {
    const updated = await tx.job.updateMany({ where: { id, tenantId, status: "paused" }, data: { status: "queued", enqueuedAt: null, pauseRequestedAt: null } });
    if (updated.count === 1) await tx.jobEvent.create({ data: { jobId: id, type: "resumed", message: "resumed; queued to continue from its newest checkpoint" } });
    return updated.count === 1;
  });
  if (resumed) {
    try {
      // The run that paused the job left its finished queue entry under the same id: replace it.
      await withRedisTimeout(queue.remove(id), config.enqueueTimeoutMs, "the removal");
      const row = await prisma.job.findUniqueOrThrow({ where: { id }, select: { id: true, priority: true } });
      await enqueueFineTune(queue, row, config.enqueueTimeoutMs);
      await prisma.job.update({ where: { id }, data: { enqueuedAt: new Date() } });
    } catch (error) {
      // Stored as queued with enqueuedAt null: the worker's reconciler queues it.
      log.warn({ job: id, err: (error as Error).message }, "resumed job not queued yet; the reconciler will queue it");
    }
  }
  const withdrawn = !resumed && (await prisma.job.updateMany({ where: { id, tenantId, status: "running", pauseRequestedAt: { not: null } }, data: { pauseRequestedAt: null } })).count === 1;
  const job = await jobOfTenant(prisma, id, tenantId);
  if (!job) throw notFound("job", id);
  if (resumed || withdrawn) return job;
  throw notNow(job, "resume");
}
