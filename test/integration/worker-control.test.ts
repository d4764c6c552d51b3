// Stopping jobs on purpose: a cancel request stops a running job within 5 s and leaves
// nothing behind; JOB_TIMEOUT_MS fails a job that runs too long.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createWorkerSuite, submitJob, waitFor, type WorkerSuite } from "../helpers/worker-harness.ts";

describe("worker cancel and timeout", () => {
  let suite: WorkerSuite;
  before(async () => {
    suite = await createWorkerSuite("control");
  });
  after(() => suite.close());

  it("cancels a running job within 5 s at a step boundary and removes its partial artifacts", async () => {
    const { db, store, fixture } = suite;
    const worker = suite.startWorker({ CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) });
    // Ten times the fixture's epochs: its own run can end within the worker's 1 s cancel poll of
    // the first checkpoint, and the cancel would then race the job's success.
    const longerJob = { ...fixture.job, hyperparameters: { ...fixture.job.hyperparameters, epochs: 40 } };
    const jobId = await submitJob(db.prisma, store, suite.queue, longerJob);
    await waitFor(() => db.prisma.checkpoint.findFirst({ where: { jobId } }), 60_000, `a checkpoint\n${worker.log}`);
    assert.ok(await store.exists(`jobs/${jobId}`));

    // What POST /v1/jobs/:id/cancel does to a running job.
    const requestedAt = Date.now();
    await db.prisma.job.update({ where: { id: jobId }, data: { status: "cancelling", cancelRequestedAt: new Date() } });
    const job = await waitFor(suite.finished(jobId), 5000, `the job to stop within 5 s\n${worker.log}`);
    assert.ok(Date.now() - requestedAt <= 5000);
    assert.equal(job.status, "cancelled");
    assert.ok(job.finishedAt);
    const cancelled = await db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "cancelled" } });
    assert.match(cancelled.message, /cancelled at step \d+/);
    assert.equal(await db.prisma.checkpoint.count({ where: { jobId } }), 0);
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    assert.equal(await store.exists(`jobs/${jobId}`), false);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });

  it("fails a job that runs past JOB_TIMEOUT_MS with a timeout error", async () => {
    const { db, fixture } = suite;
    const worker = suite.startWorker({ JOB_TIMEOUT_MS: "1500" });
    // Far more steps than any machine runs in 1.5 s, so the job can only end by timing out.
    const longJob = { ...fixture.job, hyperparameters: { ...fixture.job.hyperparameters, epochs: 1000, maxSteps: 100_000 } };
    const jobId = await submitJob(db.prisma, suite.store, suite.queue, longJob);
    const job = await waitFor(suite.finished(jobId), 60_000, `the job to time out\n${worker.log}`);
    assert.equal(job.status, "failed");
    assert.deepEqual(job.error, { code: "job_timeout", message: "the job ran longer than the maximum of 1500 ms (JOB_TIMEOUT_MS)" });
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });
});
