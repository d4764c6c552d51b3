// Stopping jobs on purpose: a cancel request stops a running job within 5 s and leaves
// nothing behind; JOB_TIMEOUT_MS fails a job that runs too long.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import { createFineTuneQueue, createRedis, type FineTunePayload } from "../../services/common/queue.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { createTestDatabase, testQueuePrefix, type TestDatabase } from "../helpers/services.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { createWorkerTestEnv, submitJob, waitFor, WorkerProcess, type WorkerTestEnv } from "../helpers/worker-harness.ts";

describe("worker cancel and timeout", () => {
  let db: TestDatabase;
  let redisServer: PrivateRedis;
  let redis: Redis;
  let queue: Queue<FineTunePayload>;
  let env: WorkerTestEnv;
  let fixture: TrainingFixture;
  const workers: WorkerProcess[] = [];

  const terminal = (id: string) => async () => {
    const job = await db.prisma.job.findUniqueOrThrow({ where: { id } });
    return ["succeeded", "failed", "cancelled"].includes(job.status) ? job : undefined;
  };

  before(async () => {
    db = await createTestDatabase("worker_control");
    redisServer = new PrivateRedis(await freePort());
    await redisServer.start();
    redis = createRedis(redisServer.url, { forWorker: true });
    const prefix = testQueuePrefix("control");
    queue = createFineTuneQueue(redis, prefix);
    env = await createWorkerTestEnv("control", db.url, redisServer.url, prefix);
    fixture = await trainingFixture(env.modelsDir);
  });

  after(async () => {
    await Promise.all(workers.map((worker) => worker.stop()));
    await queue.close();
    redis.disconnect();
    await redisServer.stop();
    await db.drop();
  });

  it("cancels a running job within 5 s at a step boundary and removes its partial artifacts", async () => {
    const worker = WorkerProcess.start({ ...env.env, CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) });
    workers.push(worker);
    const jobId = await submitJob(db.prisma, env.store, queue, fixture.job);
    await waitFor(() => db.prisma.checkpoint.findFirst({ where: { jobId } }), 60_000, `a checkpoint\n${worker.log}`);
    assert.ok(await env.store.exists(`jobs/${jobId}`));

    // What POST /v1/jobs/:id/cancel does to a running job.
    const requestedAt = Date.now();
    await db.prisma.job.update({ where: { id: jobId }, data: { status: "cancelling", cancelRequestedAt: new Date() } });
    const job = await waitFor(terminal(jobId), 5000, `the job to stop within 5 s\n${worker.log}`);
    assert.ok(Date.now() - requestedAt <= 5000);
    assert.equal(job.status, "cancelled");
    assert.ok(job.finishedAt);
    const cancelled = await db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "cancelled" } });
    assert.match(cancelled.message, /cancelled at step \d+/);
    assert.equal(await db.prisma.checkpoint.count({ where: { jobId } }), 0);
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    assert.equal(await env.store.exists(`jobs/${jobId}`), false);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });

  it("fails a job that runs past JOB_TIMEOUT_MS with a timeout error", async () => {
    const worker = WorkerProcess.start({ ...env.env, JOB_TIMEOUT_MS: "1500" });
    workers.push(worker);
    const jobId = await submitJob(db.prisma, env.store, queue, { ...fixture.job, hyperparameters: { ...fixture.job.hyperparameters, maxSteps: 1000 } });
    const job = await waitFor(terminal(jobId), 60_000, `the job to time out\n${worker.log}`);
    assert.equal(job.status, "failed");
    assert.deepEqual(job.error, { code: "job_timeout", message: "the job ran longer than the maximum of 1500 ms (JOB_TIMEOUT_MS)" });
    assert.equal(await db.prisma.adapter.count({ where: { jobId } }), 0);
    worker.kill("SIGTERM");
    assert.equal(await worker.exited, 0);
  });
});
