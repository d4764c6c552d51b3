// Redis losing everything mid-run, two workers on one queue, and a deploy's SIGTERM:
// every job still ends succeeded, and no job ever has two runs at once.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createWorkerSuite, submitJob, waitFor, type WorkerSuite } from "../helpers/worker-harness.ts";

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
    const [first, second] = [startWorker(), startWorker()];
    await waitFor(() => db.prisma.checkpoint.findFirst({ where: { jobId: { in: jobIds } } }), 60_000, `a first checkpoint\n${logs()}`);
    const runningBefore = await db.prisma.job.findMany({ where: { status: "running" }, select: { id: true } });
    assert.ok(runningBefore.length >= 1);

    await redis.flushall();
    assert.equal(await queue.getJobCountByTypes("wait", "active", "delayed", "prioritized"), 0);

    for (const id of jobIds) {
      const job = await waitFor(suite.finished(id), 80_000, `job ${id} to finish\n${logs()}`);
      assert.equal(job.status, "succeeded", JSON.stringify(job.error));
      assert.equal(job.attempts, 1, `job ${id} ran ${job.attempts} times`);
      assert.equal(await db.prisma.jobEvent.count({ where: { jobId: id, type: "started" } }), 1);
      assert.equal(await db.prisma.adapter.count({ where: { jobId: id } }), 1);
    }
    // The jobs that were running when Redis forgot them were offered again and refused by the lease.
    assert.match(logs(), /re-enqueued jobs Redis had lost/);
    for (const worker of [first, second]) {
      worker.kill("SIGTERM");
      assert.equal(await worker.exited, 0);
    }
  });

  it("hands a running job back on SIGTERM within 30 s, and another worker resumes it", async () => {
    const { db } = suite;
    const jobId = await submitJob(db.prisma, suite.store, suite.queue, suite.fixture.job);
    const leaving = startWorker();
    await waitFor(
      async () => ((await db.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).progress as { step?: number }).step,
      60_000,
      `the job to make progress\n${leaving.log}`,
    );
    const signalledAt = Date.now();
    leaving.kill("SIGTERM");
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
    const job = await waitFor(suite.finished(jobId), 80_000, `the handed-back job to finish\n${successor.log}`);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.equal(job.attempts, 1);
    const starts = await db.prisma.jobEvent.findMany({ where: { jobId, type: "started" }, orderBy: { id: "asc" } });
    assert.deepEqual(
      starts.map((event) => (event.data as { resumeFromStep: number | null }).resumeFromStep),
      [null, handBackStep],
    );
  });
});
