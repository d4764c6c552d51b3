// The Postgres guard that keeps one job from running twice, whatever Redis says.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { createLogger } from "../../services/common/logger.ts";
import { JobLease } from "../../services/worker/lease.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/services.ts";
import { waitFor } from "../helpers/worker-harness.ts";

const logger = createLogger("silent", "test");
const LEASE_BACKENDS = "SELECT pid FROM pg_stat_activity WHERE application_name = 'lora-worker-lease' AND datname = current_database()";

describe("job lease", () => {
  let db: TestDatabase;
  let admin: pg.Client;

  before(async () => {
    db = await createTestDatabase("worker_lease");
    admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
  });

  after(async () => {
    await admin.end();
    await db.drop();
  });

  it("is held by one run at a time and free again once released", async () => {
    const jobId = randomUUID();
    const first = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(first);
    assert.equal(await JobLease.tryAcquire(db.url, jobId, logger), undefined);
    const otherJob = await JobLease.tryAcquire(db.url, randomUUID(), logger);
    assert.ok(otherJob, "leases of different jobs are independent");
    await first.release();
    const second = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(second);
    await second.release();
    await otherJob.release();
  });

  it("takes the lock again when its connection dies and nobody else took the job (a Postgres restart)", async () => {
    const jobId = randomUUID();
    const lease = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(lease);
    let lost = false;
    lease.whenLost(() => (lost = true));
    const [before] = (await admin.query(LEASE_BACKENDS)).rows as { pid: number }[];
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lora-worker-lease' AND datname = current_database()");
    const retaken = await waitFor(
      async () => ((await admin.query(LEASE_BACKENDS)).rows as { pid: number }[]).find((row) => row.pid !== before.pid),
      10_000,
      "the lease to hold the lock on a new connection",
    );
    assert.ok(retaken);
    assert.equal(await JobLease.tryAcquire(db.url, jobId, logger), undefined, "the job is still leased");
    assert.equal(lost, false);
    await lease.release();
    const next = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(next, "a released lease is free");
    await next.release();
  });

  it("tells its holder when another run took the lock while its connection was down", async () => {
    const jobId = randomUUID();
    const lease = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(lease);
    let lost = false;
    lease.whenLost(() => (lost = true));
    // Another session queues for the lock first, so Postgres hands it over the moment the holder dies.
    const rival = new pg.Client({ connectionString: db.url });
    await rival.connect();
    const rivalLocked = rival.query("SELECT pg_advisory_lock(hashtextextended($1, 0))", [jobId]);
    await waitFor(async () => (await admin.query("SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")).rowCount, 5000, "the rival to wait for the lock");
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lora-worker-lease' AND datname = current_database()");
    await rivalLocked;
    await waitFor(async () => lost, 10_000, "the lease to report its loss");
    await lease.release();
    await rival.end();
    const next = await JobLease.tryAcquire(db.url, jobId, logger);
    assert.ok(next, "the rival's lease ended with its session");
    await next.release();
  });
});
