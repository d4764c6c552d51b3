// A job's bookkeeping must outlive a Postgres outage: once a run has claimed its job, every write
// that decides the job's fate is retried with backoff while the database is unreachable, instead
// of failing the job or throwing its trained result away. Any other error is the caller's to handle.
import { setTimeout as sleep } from "node:timers/promises";
import { isDatabaseUnavailable, type OutageLog } from "../common/db.ts";

export interface RetryPolicy {
  /** First wait after a failed try; each further wait doubles, up to `maxDelayMs`, with jitter. */
  initialDelayMs: number;
  maxDelayMs: number;
}

export const DATABASE_RETRY: RetryPolicy = { initialDelayMs: 250, maxDelayMs: 5000 };

/** Thrown when a write was still failing for lack of a database when its caller stopped waiting. */
export class DatabaseStillUnavailable extends Error {
  override name = "DatabaseStillUnavailable";
}

export class Durable {
  constructor(
    private readonly outages: OutageLog,
    private readonly policy: RetryPolicy = DATABASE_RETRY,
  ) {}

  /**
   * Runs `write` until it succeeds, retrying only while the database is unavailable. `abandon`
   * is asked before each wait: when it says yes (the worker is shutting down) the last error is
   * rethrown as DatabaseStillUnavailable, and the job is left for the next worker to resume.
   */
  async write<T>(write: () => Promise<T>, abandon: () => boolean = () => false): Promise<T> {
    for (let retry = 0; ; retry++) {
      try {
        const result = await write();
        this.outages.restored();
        return result;
      } catch (error) {
        if (!isDatabaseUnavailable(error)) throw error;
        this.outages.lost(error);
        if (abandon()) throw new DatabaseStillUnavailable("gave up waiting for the database", { cause: error });
        const delay = Math.min(this.policy.maxDelayMs, this.policy.initialDelayMs * 2 ** retry);
        await sleep(delay * (0.5 + Math.random() / 2));
      }
    }
  }
}
