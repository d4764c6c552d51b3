// kill -9 of a worker mid-training: stall detection hands its jobs to a new worker, which
// resumes from the newest checkpoint and ends with the metrics of an uninterrupted run; a
// job out of attempts fails with a clear error.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { CheckpointHold, createWorkerSuite, submitJob, waitFor, type WorkerSuite } from "../helpers/worker-harness.ts";

describe("worker crash recovery", () => {
  let suite: WorkerSuite;
  before(async () => {
    suite = await createWorkerSuite("crash");
  });
  after(() => suite.close());

  it("resumes a killed worker's job from its checkpoint to the same final metrics, and fails a job out of attempts", async () => {
    const { db, store, queue, fixture } = suite;
    const workerEnv = { WORKER_CONCURRENCY: "2", CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) };
    const resumed = await submitJob(db.prisma, store, queue, fixture.job);
    const exhausted = await submitJob(db.prisma, store, queue, { ...fixture.job, maxAttempts: 1 });
    // Both jobs are held mid-run when the worker dies: the first after its first checkpoint, the second at it.
    const resumedHold = await CheckpointHold.take(db.url, { jobId: resumed, step: 2 * fixture.checkpointEverySteps });
    const exhaustedHold = await CheckpointHold.take(db.url, { jobId: exhausted, step: fixture.checkpointEverySteps });
    const first = suite.startWorker(workerEnv);
    await resumedHold.reached(60_000, () => first.log);
    await exhaustedHold.reached(60_000, () => first.log);
    const checkpoint = await db.prisma.checkpoint.findFirstOrThrow({ where: { jobId: resumed }, orderBy: { step: "desc" } });
    assert.equal(checkpoint.step, fixture.checkpointEverySteps);
    first.kill("SIGKILL");
    await first.exited;
    await resumedHold.release();
    await exhaustedHold.release();
    assert.equal((await db.prisma.job.findUniqueOrThrow({ where: { id: resumed } })).status, "running");

    const uninterrupted = await submitJob(db.prisma, store, queue, fixture.job);
    const second = suite.startWorker(workerEnv);
    const resumedJob = await waitFor(suite.finished(resumed), 80_000, () => `the resumed job to finish\n${second.log}`);
    const exhaustedJob = await waitFor(suite.finished(exhausted), 10_000, "the job out of attempts to fail");
    const uninterruptedJob = await waitFor(suite.finished(uninterrupted), 80_000, () => `the uninterrupted job to finish\n${second.log}`);

    assert.equal(resumedJob.status, "succeeded", JSON.stringify(resumedJob.error));
    assert.equal(resumedJob.attempts, 2);
    const starts = await db.prisma.jobEvent.findMany({ where: { jobId: resumed, type: "started" }, orderBy: { id: "asc" } });
    assert.equal(starts.length, 2);
    const resumeStep = (starts[1].data as { resumeFromStep: number | null }).resumeFromStep;
    assert.ok(resumeStep !== null && resumeStep >= checkpoint.step, `resumed from step ${resumeStep}, checkpoint was at ${checkpoint.step}`);

    assert.equal(uninterruptedJob.status, "succeeded", JSON.stringify(uninterruptedJob.error));
    assert.equal(uninterruptedJob.attempts, 1);
    assert.deepEqual(resumedJob.metrics, uninterruptedJob.metrics);
    const adapters = await db.prisma.adapter.findMany({ where: { jobId: { in: [resumed, uninterrupted] } } });
    assert.equal(adapters.length, 2);

    assert.equal(exhaustedJob.status, "failed");
    const error = exhaustedJob.error as { code: string; message: string };
    assert.equal(error.code, "max_attempts_exceeded");
    assert.match(error.message, /gave up after 1 attempt/);
    assert.equal(await db.prisma.checkpoint.count({ where: { jobId: exhausted } }), 0);
  });
});
