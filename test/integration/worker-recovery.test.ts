// Redis losing everything mid-run, two workers on one queue, and a deploy's SIGTERM:
// every job still ends succeeded, and no job ever has two runs at once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { CheckpointHold, createWorkerSuite, stopRequested, submitJob, waitFor, type WorkerSuite } from "../helpers/worker-harness.ts";

describe("worker recovery", () => {
  let suite: WorkerSuite;
  const startWorker = () => suite.startWorker({ CHECKPOINT_EVERY_STEPS: String(suite.fixture.checkpointEverySteps) });
  before(async () => {
    suite = await createWorkerSuite("recovery");
  });
  after(() => suite.close());

  it("finishes every job exactly once across two workers after FLUSHALL mid-run", async () => {
    const { db, redis, queue, logs } = suite;
    const jobIds: string[] = [];
    for (let index = 0; index < 3; index += 1) jobIds.push(await submitJob(db.prisma, suite.store, queue, suite.fixture.job));
    // The first job is held at its first checkpoint, so it is surely running when Redis forgets it.
    const hold = await CheckpointHold.take(db.url, { jobId: jobIds[0], step: suite.fixture.checkpointEverySteps });
    const [first, second] = [startWorker(), startWorker()];
    await hold.reached(60_000, logs);
    assert.equal((await db.prisma.job.findUniqueOrThrow({ where: { id: jobIds[0] } })).status, "running");

    await redis.flushall();
    // The reconcilers put the running job back in the queue; its lease keeps another worker from running it twice.
    await waitFor(async () => /re-enqueued jobs Redis had lost/.test(logs()), 30_000, () => `a reconciler to re-enqueue the jobs\n${logs()}`);
    await hold.release();

    for (const id of jobIds) {
      const job = await waitFor(suite.finished(id), 80_000, () => `job ${id} to finish\n${logs()}`);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      assert.equal(job.attempts, 1, `job ${id} ran ${job.attempts} times`);
      assert.equal(await db.prisma.jobEvent.count({ where: { jobId: id, type: "started" } }), 1);
      assert.equal(await db.prisma.adapter.count({ where: { jobId: id } }), 1);
    }
    for (const worker of [first, second]) {
      worker.kill("SIGTERM");
      assert.equal(await worker.exited, 0);
    }
  });

  it("hands a running job back on SIGTERM within 30 s, and another worker resumes it", async () => {
    const { db } = suite;
    const jobId = await submitJob(db.prisma, suite.store, suite.queue, suite.fixture.job);
    const hold = await CheckpointHold.take(db.url, { jobId, step: 2 * suite.fixture.checkpointEverySteps });
    const leaving = startWorker();
    await hold.reached(60_000, () => leaving.log);
    const signalledAt = Date.now();
    leaving.kill("SIGTERM");
    await stopRequested(leaving, "shutdown");
    await hold.release();
    assert.equal(await leaving.exited, 0, leaving.log);
    assert.ok(Date.now() - signalledAt < 30_000);

    const handedBack = await db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    assert.equal(handedBack.status, "queued");
    assert.equal(handedBack.workerId, null);
    const requeued = await db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "requeued" } });
    const handBackStep = (requeued.data as { step: number }).step;
    const newest = await db.prisma.checkpoint.findFirstOrThrow({ where: { jobId }, orderBy: { step: "desc" } });
    assert.equal(newest.step, handBackStep);

    const successor = startWorker();
    const job = await waitFor(suite.finished(jobId), 80_000, () => `the handed-back job to finish\n${successor.log}`);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.equal(job.attempts, 1);
    const starts = await db.prisma.jobEvent.findMany({ where: { jobId, type: "started" }, orderBy: { id: "asc" } });
    assert.deepEqual(
      starts.map((event) => (event.data as { resumeFromStep: number | null }).resumeFromStep),
      [null, handBackStep],
    );
  });
});
