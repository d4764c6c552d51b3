// At most one run of a job at a time, whatever Redis says: a run holds a Postgres advisory
// lock on the job id over its own connection. Redis can lose a job's BullMQ lock (FLUSHALL,
// a long pause); Postgres releases this one only when the holder ends it or its connection
// dies with its process.
import pg from "pg";

export class JobLease {
  private released = false;
  private onLost: (() => void) | undefined;

  private constructor(
    private readonly client: pg.Client,
    readonly jobId: string,
  ) {
    client.on("end", () => {
      if (!this.released) this.onLost?.();
    });
  }

  /** Called once if the connection holding the lock drops: the run no longer owns the job. */
  whenLost(callback: () => void): void {
    this.onLost = callback;
  }

  /** The lease, or undefined when another run holds it. */
  static async tryAcquire(databaseUrl: string, jobId: string): Promise<JobLease | undefined> {
    const client = new pg.Client({
      connectionString: databaseUrl,
      application_name: "lora-worker-lease",
      // The lock lives as long as Postgres believes this idle session alive: with TCP keepalives
      // a vanished worker host frees its jobs in about a minute, not the kernel's two hours.
      keepAlive: true,
      options: "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3",
    });
    // A dropped connection means the lock is gone too; the run notices through `whenLost`.
    client.on("error", () => {});
    await client.connect();
    try {
      const result = await client.query<{ acquired: boolean }>("SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS acquired", [
        jobId,
      ]);
      if (result.rows[0]?.acquired) return new JobLease(client, jobId);
    } catch (error) {
      await client.end().catch(() => {});
      throw error;
    }
    await client.end();
    return undefined;
  }

  async release(): Promise<void> {
    this.released = true;
    // Closing the session releases its advisory locks.
    await this.client.end().catch(() => {});
  }
}
