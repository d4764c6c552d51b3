// Queue names and payloads shared by the API (producer) and the worker (consumer).
// The BullMQ job id is always the database job id, so adding a job twice is a no-op.
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { CallBatcher } from "./batcher.ts";

export const FINE_TUNE_QUEUE = "fine-tune";

export interface FineTunePayload {
  jobId: string;
}

/**
 * A Redis connection that never gives up reconnecting. Commands issued while
 * disconnected fail fast instead of piling up, so callers can report Redis down.
 */
export function createRedis(redisUrl: string, options: { forWorker?: boolean } = {}): Redis {
  return new Redis(redisUrl, {
    lazyConnect: false,
    // BullMQ workers block on Redis and must never see a retry limit.
    maxRetriesPerRequest: options.forWorker ? null : 1,
    enableOfflineQueue: options.forWorker ?? false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
}

export async function pingRedis(redis: Redis, timeoutMs = 1000): Promise<void> {
  if (redis.status !== "ready") throw new Error(`redis connection is ${redis.status}`);
  await Promise.race([
    redis.ping(),
    new Promise((_, reject) => setTimeout(() => reject(new Error("redis ping timed out")), timeoutMs).unref()),
  ]);
}

export function createFineTuneQueue(redis: Redis, prefix: string): Queue<FineTunePayload> {
  return new Queue<FineTunePayload>(FINE_TUNE_QUEUE, { connection: redis, prefix });
}

/** API priorities run from 0 (lowest) to 100 (highest); BullMQ runs its priority 1 first. */
export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 100;
export const DEFAULT_PRIORITY = 50;

export function bullPriority(priority: number): number {
  return MAX_PRIORITY + 1 - priority;
}

/**
 * BullMQ waits for a connection rather than failing while Redis is down; callers on a
 * request path bound that wait and report Redis as unavailable instead.
 */
export async function withRedisTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`redis did not answer ${what} within ${timeoutMs} ms`)), timeoutMs);
  });
  work.catch(() => {});
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Adds the job to BullMQ under its database id, so adding it again (a retry, the
 * reconciler) never creates a second copy. Rejects when Redis does not answer in time.
 */
export async function enqueueFineTune(queue: Queue<FineTunePayload>, job: { id: string; priority: number }, timeoutMs: number): Promise<void> {
  await withRedisTimeout(
    queue.add(FINE_TUNE_QUEUE, { jobId: job.id }, { jobId: job.id, priority: bullPriority(job.priority) }),
    timeoutMs,
    "the job",
  );
}

/**
 * Adds the jobs submitted in the same event-loop turn with one `addBulk` (one Redis
 * round trip), so a burst of submissions does not pay a round trip each. Same ids,
 * same idempotence and the same timeout as `enqueueFineTune`.
 */
export class EnqueueBatcher {
  private readonly batches: CallBatcher<{ id: string; priority: number }, void>;

  constructor(queue: Queue<FineTunePayload>, timeoutMs: number, maxBatch = 200) {
    this.batches = new CallBatcher<{ id: string; priority: number }, void>(async (pending) => {
      const jobs = pending.map((job) => ({ name: FINE_TUNE_QUEUE, data: { jobId: job.id }, opts: { jobId: job.id, priority: bullPriority(job.priority) } }));
      await withRedisTimeout(queue.addBulk(jobs), timeoutMs, `${jobs.length} job(s)`);
      return pending.map(() => undefined);
    }, maxBatch);
  }

  add(job: { id: string; priority: number }): Promise<void> {
    return this.batches.add(job);
  }
}
