// What cancel (and pause, resume) do to a job, whichever API asked: conditional updates, since a
// worker may change the status between our read and our write, each written with its event in
// one transaction. The routes only shape the answer.
import type { FastifyBaseLogger } from "fastify";
import type { Queue } from "bullmq";
import type { PrismaClient } from "../common/db.ts";
import { AppError, notFound } from "../common/errors.ts";
import type { Job } from "../common/generated/prisma/client.ts";
import { withRedisTimeout, type FineTunePayload } from "../common/queue.ts";

export interface JobActionDeps {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  config: { enqueueTimeoutMs: number };
}

export type JobWithAdapterId = Job & { adapter: { id: string } | null };
const withAdapter = { adapter: { select: { id: true } } } as const;

export const jobOfTenant = (prisma: PrismaClient, id: string, tenantId: string) => prisma.job.findFirst({ where: { id, tenantId }, include: withAdapter });

/**
 * A queued job is cancelled at once (`immediate`); a running one becomes `cancelling` until its
 * worker stops. 404 for another tenant's job, 409 job_finished for a finished one.
 */
export async function cancelJob(deps: JobActionDeps, tenantId: string, id: string, log: FastifyBaseLogger): Promise<{ job: JobWithAdapterId; immediate: boolean }> {
  const { prisma, queue, config } = deps;
  const now = new Date();
  const cancelled = await prisma.$transaction(async (tx) => {
    const updated = await tx.job.updateMany({
      where: { id, tenantId, status: { in: ["queued"] } },
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
