// The Postgres guard that keeps one job from running twice, whatever Redis says.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { JobLease } from "../../services/worker/lease.ts";
import { createTestDatabase, type TestDatabase } from "../helpers/services.ts";
import { waitFor } from "../helpers/worker-harness.ts";

describe("job lease", () => {
  let db: TestDatabase;

  before(async () => {
    db = await createTestDatabase("worker_lease");
  });

  after(async () => {
    await db.drop();
  });

  it("is held by one run at a time and free again once released", async () => {
    const jobId = randomUUID();
    const first = await JobLease.tryAcquire(db.url, jobId);
    assert.ok(first);
    assert.equal(await JobLease.tryAcquire(db.url, jobId), undefined);
    const otherJob = await JobLease.tryAcquire(db.url, randomUUID());
    assert.ok(otherJob, "leases of different jobs are independent");
    await first.release();
    const second = await JobLease.tryAcquire(db.url, jobId);
    assert.ok(second);
    await second.release();
    await otherJob.release();
  });

  it("tells its holder when the connection holding the lock dies, and frees the job", async () => {
    const jobId = randomUUID();
    const lease = await JobLease.tryAcquire(db.url, jobId);
    assert.ok(lease);
    let lost = false;
    lease.whenLost(() => (lost = true));
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'lora-worker-lease' AND datname = current_database()");
    await admin.end();
    await waitFor(async () => lost, 5000, "the lease to report its loss");
    const next = await JobLease.tryAcquire(db.url, jobId);
    assert.ok(next, "a dead holder's lease is free");
    await next.release();
    await lease.release();
  });
});
