// Postgres is the truth and Redis may lose everything (or be down when a job is
// submitted). The worker calls this at start and every RECONCILE_INTERVAL_MS: each job
// Postgres says is waiting but BullMQ does not know, or knows only as finished (a paused job
// resumed while Redis was away), is added again under its own id.
import type { Queue } from "bullmq";
import type { PrismaClient } from "./db.ts";
import type { JobStatus } from "./generated/prisma/enums.ts";
import { enqueueFineTune, type FineTunePayload } from "./queue.ts";

export interface ReconcileResult {
  checked: number;
  enqueued: string[];
}

export interface ReconcileOptions {
  /** Which database statuses mean "should be in the queue"; `queued` unless told. */
  statuses?: JobStatus[];
  batchSize?: number;
  enqueueTimeoutMs?: number;
}

export async function reconcileQueue(
  prisma: PrismaClient,
  queue: Queue<FineTunePayload>,
  options: ReconcileOptions = {},
): Promise<ReconcileResult> {
  const statuses = options.statuses ?? ["queued"];
  const batchSize = options.batchSize ?? 500;
  const result: ReconcileResult = { checked: 0, enqueued: [] };
  let cursor: { createdAt: Date; id: string } | undefined;
  for (;;) {
    const jobs = await prisma.job.findMany({
      where: {
        status: { in: statuses },
        ...(cursor ? { OR: [{ createdAt: { gt: cursor.createdAt } }, { createdAt: cursor.createdAt, id: { gt: cursor.id } }] } : {}),
      },
      select: { id: true, priority: true, createdAt: true },
      orderBy: [{ createdAt: "asc" }, { id: "asc" }],
      take: batchSize,
    });
    if (jobs.length === 0) return result;
    cursor = jobs[jobs.length - 1];
    result.checked += jobs.length;
    const known = await Promise.all(jobs.map((job) => queue.getJob(job.id)));
    const missing = jobs.filter((_, index) => known[index] === undefined || known[index]?.finishedOn);
    for (const [index, job] of jobs.entries()) {
      // A finished entry keeps its id taken: it must go before the job can be added again.
      if (known[index]?.finishedOn) await known[index].remove();
    }
    for (const job of missing) {
      await enqueueFineTune(queue, job, options.enqueueTimeoutMs ?? 5000);
      result.enqueued.push(job.id);
    }
    if (missing.length > 0) {
      await prisma.job.updateMany({ where: { id: { in: missing.map((job) => job.id) }, enqueuedAt: null }, data: { enqueuedAt: new Date() } });
    }
  }
}
