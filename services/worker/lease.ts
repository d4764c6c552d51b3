// At most one run of a job at a time, whatever Redis says: a run holds a Postgres advisory
// lock on the job id over its own connection. Redis can lose a job's BullMQ lock (FLUSHALL,
// a long pause); Postgres releases this one only when the holder ends it or its connection
// dies. When the connection dies under a live run (a Postgres restart or failover), the run
// keeps training and takes the lock again once Postgres answers; only if another run got it
// first is the lease lost.
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import type { Logger } from "../common/logger.ts";

const RETAKE_INITIAL_DELAY_MS = 250;
const RETAKE_MAX_DELAY_MS = 5000;

async function connect(databaseUrl: string): Promise<pg.Client> {
  const client = new pg.Client({
    connectionString: databaseUrl,
    application_name: "lora-worker-lease",
    // The lock lives as long as Postgres believes this idle session alive: with TCP keepalives
    // a vanished worker host frees its jobs in about a minute, not the kernel's two hours.
    keepAlive: true,
    options: "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
  });
  // A dropped connection means the lock is gone too; the lease notices through "end".
  client.on("error", () => {});
  await client.connect();
  return client;
}

/** The lock on a new connection, or undefined (connection closed) when another session holds it. */
async function lockOn(databaseUrl: string, jobId: string): Promise<pg.Client | undefined> {
  const client = await connect(databaseUrl);
  try {
    const result = await client.query<{ acquired: boolean }>("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS acquired", [jobId]);
    if (result.rows[0]?.acquired) return client;
  } catch (error) {
    await client.end().catch(() => {});
    throw error;
  }
  await client.end();
  return undefined;
}

export class JobLease {
  private released = false;
  private onLost: (() => void) | undefined;

  private constructor(
    private client: pg.Client,
    private readonly databaseUrl: string,
    readonly jobId: string,
    private readonly logger: Logger,
  ) {
    this.watch(client);
  }

  /** Called once if another run takes the lock while this one could not hold it: the run no longer owns the job. */
  whenLost(callback: () => void): void {
    this.onLost = callback;
  }

  /** The lease, or undefined when another run holds it. */
  static async tryAcquire(databaseUrl: string, jobId: string, logger: Logger): Promise<JobLease | undefined> {
    const client = await lockOn(databaseUrl, jobId);
    return client && new JobLease(client, databaseUrl, jobId, logger);
  }

  async release(): Promise<void> {
    this.released = true;
    // Closing the session releases its advisory locks.
    await this.client.end().catch(() => {});
  }

  private watch(client: pg.Client): void {
    client.once("end", () => {
      if (!this.released && client === this.client) void this.retake();
    });
  }

  private async retake(): Promise<void> {
    this.logger.warn({ jobId: this.jobId }, "the job's lease connection dropped; taking the lock again once Postgres answers");
    for (let retry = 0; !this.released; retry++) {
      await sleep(Math.min(RETAKE_MAX_DELAY_MS, RETAKE_INITIAL_DELAY_MS * 2 ** retry));
      if (this.released) return;
      let client: pg.Client | undefined;
      try {
        client = await lockOn(this.databaseUrl, this.jobId);
      } catch {
        continue;
      }
      if (!client) {
        this.onLost?.();
        return;
      }
      if (this.released) {
        await client.end().catch(() => {});
        return;
      }
      this.client = client;
      this.watch(client);
      this.logger.info({ jobId: this.jobId }, "the job's lease is held again");
      return;
    }
  }
}
