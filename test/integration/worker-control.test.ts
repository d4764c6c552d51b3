// Stopping jobs on purpose: a cancel request stops a running job within 5 s and leaves
// nothing behind; JOB_TIMEOUT_MS fails a job that runs too long. Each job is held at a
// checkpoint while the test acts, so a fast machine cannot finish it first.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { CheckpointHold, createWorkerSuite, stopRequested, submitJob, waitFor, type WorkerSuite } from "../helpers/worker-harness.ts";

describe("worker cancel and timeout", () => {
  let suite: WorkerSuite;
  before(async () => {
    suite = await createWorkerSuite("control");
  });
  after(() => suite.close());

  it("cancels a running job within 5 s at a step boundary and removes its partial artifacts", async () => {
    const { db, store, fixture } = suite;
    const hold = await CheckpointHold.take(db.url);
    const worker = suite.startWorker({ CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) });
    const jobId = await submitJob(db.prisma, store, suite.queue, fixture.job);
    await hold.reached(60_000, () => worker.log);
    assert.ok(await store.exists(`jobs/${jobId}`));
    const running = await db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    assert.equal(running.status, "running");

    // What POST /v1/jobs/:id/cancel does to a running job.
    const requestedAt = Date.now();
    await db.prisma.job.update({ where: { id: jobId }, data: { status: "cancelling", cancelRequestedAt: new Date() } });
    await stopRequested(worker, "cancel", 5000);
    await hold.release();
    const job = await waitFor(suite.finished(jobId), 5000, () => `the job to stop within 5 s\n${worker.log}`);
    assert.ok(Date.now() - requestedAt <= 5000);
    assert.equal(job.status, "cancelled");
    assert.ok(job.finishedAt);
    const cancelled = await db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "cancelled" } });
    assert.equal(cancelled.message, `cancelled at step ${fixture.checkpointEverySteps}`);
    assert.equal(await db.prisma.checkpoint.count({ where: { jobId } }), 0);
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    assert.equal(await store.exists(`jobs/${jobId}`), false);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });

  it("fails a job that runs past JOB_TIMEOUT_MS with a timeout error", async () => {
    const { db, fixture } = suite;
    const hold = await CheckpointHold.take(db.url);
    const worker = suite.startWorker({ JOB_TIMEOUT_MS: "1500", CHECKPOINT_EVERY_STEPS: "1" });
    const jobId = await submitJob(db.prisma, suite.store, suite.queue, fixture.job);
    // Held at its first checkpoint, the job cannot finish before its time is up, however fast the machine.
    await stopRequested(worker, "timeout");
    await hold.release();
    const job = await waitFor(suite.finished(jobId), 30_000, () => `the job to time out\n${worker.log}`);
    assert.equal(job.status, "failed");
    assert.deepEqual(job.error, { code: "job_timeout", message: "the job ran longer than the maximum of 1500 ms (JOB_TIMEOUT_MS)" });
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });
});
