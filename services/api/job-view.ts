// A job as clients see it, and the serialized views the job-status route answers from while a
// job's row has not changed. Shared by the job routes and the SQL that reads jobs (job-sql.ts).
import type { Job } from "../common/generated/prisma/client.ts";

export type JobWithAdapter = Job & { adapter: { id: string } | null };

/** The row without what only the service needs (tenant, idempotency bookkeeping, worker id). */
export function jobView(job: JobWithAdapter) {
  const { loraConfig, adapter, tenantId: _tenant, idempotencyKey: _key, requestHash: _hash, workerId: _worker, fromCheckpointJobId, fromCheckpointStep, fromAdapterId, ...rest } = job;
  return {
    ...rest,
    lora: loraConfig,
    adapterId: adapter?.id ?? null,
    estimatedFinish: estimatedFinish(job),
    fromCheckpoint: fromCheckpointJobId && fromCheckpointStep !== null ? { jobId: fromCheckpointJobId, step: fromCheckpointStep } : null,
    fromAdapter: fromAdapterId,
  };
}

/** While running: when the worker's latest step report (written at updatedAt) expects the last step. */
export function estimatedFinish(job: Pick<Job, "status" | "progress" | "updatedAt">): Date | null {
  const etaMs = (job.progress as { etaMs?: number } | null)?.etaMs;
  return job.status === "running" && typeof etaMs === "number" ? new Date(job.updatedAt.getTime() + etaMs) : null;
}

/**
 * Serialized job views by job id, each valid for one version of its row. Pollers mostly read
 * jobs that have not changed since the last poll: they then cost a two-column query, and no
 * full row to parse, no view to build and serialize. Least recently stored first out.
 */
export class SerializedJobViews {
  private readonly bodies = new Map<string, { version: string; body: string }>();

  constructor(private readonly capacity: number) {}

  get(id: string, version: string): string | undefined {
    const entry = this.bodies.get(id);
    return entry?.version === version ? entry.body : undefined;
  }

  set(id: string, version: string, body: string): void {
    this.bodies.delete(id);
    this.bodies.set(id, { version, body });
    if (this.bodies.size > this.capacity) this.bodies.delete(this.bodies.keys().next().value!);
  }
}
