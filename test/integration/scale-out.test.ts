// Scale-out without a shared disk: two API processes and two worker processes, each with its own
// DATA_DIR and an empty MODELS_DIR, sharing only Postgres, Redis and an S3 bucket (s3rver), which
// also holds the base model (uploaded with the models CLI). A worker killed with kill -9
// mid-job has its job finished by the other from the checkpoint in S3; the adapter downloads
// through either API with the same ETag (one streaming, one redirecting to a presigned URL); and
// one key's rate limit holds across both APIs.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { createApiKey } from "../../services/common/auth.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { TestS3 } from "../helpers/s3-server.ts";
import { createTestDatabase, testQueuePrefix, type TestDatabase } from "../helpers/services.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { CheckpointHold, ServiceProcess, waitFor } from "../helpers/worker-harness.ts";

const RATE_LIMIT = 40;
const run = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, "../..");

interface Api {
  process: ServiceProcess;
  url: string;
}

describe("scale-out: two APIs and two workers sharing only Postgres, Redis and S3", () => {
  let db: TestDatabase;
  let redis: PrivateRedis;
  let s3: TestS3;
  let root: string;
  let fixture: TrainingFixture;
  let sharedEnv: Record<string, string>;
  const processes: ServiceProcess[] = [];
  let apis: Api[];
  let keyA: string;
  let keyB: string;
  const logs = () => processes.map((service, index) => `--- process ${index} ---\n${service.log.slice(-4000)}`).join("\n");

  const dataDir = async (name: string) => fs.mkdir(path.join(root, name), { recursive: true }).then(() => path.join(root, name));

  async function startApi(name: string, env: Record<string, string> = {}): Promise<Api> {
    const port = await freePort();
    const service = ServiceProcess.api({ ...sharedEnv, DATA_DIR: await dataDir(name), HOST: "127.0.0.1", PORT: String(port), ...env });
    processes.push(service);
    const url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok, 60_000, () => `API ${name} to answer /healthz\n${service.log}`);
    return { process: service, url };
  }

  async function startWorker(name: string): Promise<ServiceProcess> {
    const service = ServiceProcess.worker({ ...sharedEnv, DATA_DIR: await dataDir(name), WORKER_ID: name });
    processes.push(service);
    return service;
  }

  const call = (api: Api, route: string, init: RequestInit & { key?: string } = {}) =>
    fetch(`${api.url}${route}`, { ...init, headers: { authorization: init.key ?? keyA, ...(init.body && typeof init.body === "string" ? { "content-type": "application/json" } : {}), ...init.headers } });

  async function createJob(api: Api, datasetId: string): Promise<string> {
    const response = await call(api, "/v1/jobs", {
      method: "POST",
      body: JSON.stringify({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, validationSplit: fixture.job.validationSplit, lora: fixture.job.lora, hyperparameters: fixture.job.hyperparameters }),
    });
    assert.equal(response.status, 201, await response.clone().text());
    return ((await response.json()) as { id: string }).id;
  }

  const finished = (jobId: string) => async () => {
    const job = await db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    return ["succeeded", "failed", "cancelled"].includes(job.status) ? job : undefined;
  };

  before(async () => {
    db = await createTestDatabase("scale_out");
    redis = new PrivateRedis(await freePort());
    await redis.start();
    s3 = await TestS3.start("scale-out");
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-scale-out-"));
    // The base model exists only in the bucket: uploaded with the models CLI; every process's
    // MODELS_DIR is empty, the API lists the model from S3 and each worker fetches it into its cache.
    fixture = await trainingFixture(await dataDir("model-source"));
    const modelsDir = await dataDir("empty-models");
    const uploaded = await run("npx", ["tsx", "services/api/models-cli.ts", "upload", fixture.modelDir], { cwd: repoRoot, env: { ...process.env, ...s3.env(), DATA_DIR: await dataDir("cli") } });
    assert.match(uploaded.stderr, /uploaded tiny-distilbert/);
    sharedEnv = {
      ...s3.env(),
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      QUEUE_PREFIX: testQueuePrefix("scale"),
      MODELS_DIR: modelsDir,
      TRAINER_BACKEND: process.env.TRAINER_BACKEND ?? "auto",
      RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT),
      CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps),
      WORKER_LOCK_DURATION_MS: "2000",
      WORKER_STALLED_INTERVAL_MS: "1000",
      RECONCILE_INTERVAL_MS: "1000",
    };
    keyA = `Bearer ${(await createApiKey(db.prisma, "tenant-a", "scale")).key}`;
    keyB = `Bearer ${(await createApiKey(db.prisma, "tenant-b", "scale")).key}`;
    apis = [await startApi("api-1"), await startApi("api-2", { ARTIFACT_DOWNLOAD: "redirect" })];
  });

  after(async () => {
    await Promise.all(processes.map((service) => service.stop()));
    await redis?.stop();
    await s3?.stop();
    await db?.drop();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  it("finishes a job whose worker was killed with kill -9 on the other worker, from the checkpoint in S3, and serves its adapter from either API", async () => {
    const upload = new FormData();
    upload.append("file", new Blob([await fs.readFile(fixture.job.datasetFile)]), "sentiment.jsonl");
    const dataset = await call(apis[0], "/v1/datasets", { method: "POST", body: upload });
    assert.equal(dataset.status, 201, await dataset.clone().text());
    const datasetId = ((await dataset.json()) as { id: string }).id;

    // Created before any worker runs, so the hold is in place before training starts.
    const resumed = await createJob(apis[1], datasetId);
    const hold = await CheckpointHold.take(db.url, { jobId: resumed, step: 2 * fixture.checkpointEverySteps });
    const first = await startWorker("worker-1");
    await hold.reached(90_000, logs);
    const checkpoint = await db.prisma.checkpoint.findFirstOrThrow({ where: { jobId: resumed }, orderBy: { step: "desc" } });
    assert.equal(checkpoint.step, fixture.checkpointEverySteps);
    first.kill("SIGKILL");
    await first.exited;
    await hold.release();

    const second = await startWorker("worker-2");
    const job = await waitFor(finished(resumed), 120_000, () => `the killed worker's job to be finished by worker-2\n${logs()}`);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.equal(job.attempts, 2);
    const starts = await db.prisma.jobEvent.findMany({ where: { jobId: resumed, type: "started" }, orderBy: { id: "asc" } });
    const attempts = starts.map((event) => event.data as { workerId: string; resumeFromStep: number | null });
    assert.deepEqual(attempts.map((attempt) => attempt.workerId), ["worker-1", "worker-2"]);
    assert.equal(attempts[1].resumeFromStep, fixture.checkpointEverySteps, "worker-2 resumed from the checkpoint worker-1 left in S3");
    // The job is succeeded once its row commits; the worker clears its local copies just after.
    const localCopies = path.join(root, "worker-2", "jobs", resumed);
    await waitFor(async () => fs.access(localCopies).then(() => false, () => true), 10_000, () => `worker-2 to drop its local checkpoint copies\n${logs()}`);
    for (const worker of ["worker-1", "worker-2"]) await fs.access(path.join(root, worker, "models", "tiny-distilbert", "config.json"));
    assert.deepEqual(await fs.readdir(path.join(root, "empty-models")), [], "the base model came from the bucket into each worker's cache, not from MODELS_DIR");

    // Both workers (worker-1 restarted on its own disk) take further jobs.
    await startWorker("worker-1b");
    const more = [await createJob(apis[0], datasetId), await createJob(apis[1], datasetId)];
    for (const jobId of more) {
      const done = await waitFor(finished(jobId), 120_000, () => `job ${jobId} to finish\n${logs()}`);
      assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    }
    assert.ok(second.running, "worker-2 still runs");

    const adapter = await db.prisma.adapter.findFirstOrThrow({ where: { jobId: resumed } });
    const streamed = await call(apis[0], `/v1/adapters/${adapter.id}/download`);
    assert.equal(streamed.status, 200);
    const bytes = Buffer.from(await streamed.arrayBuffer());
    const etag = `"${createHash("sha256").update(bytes).digest("hex")}"`;
    assert.equal(streamed.headers.get("etag"), etag);
    assert.equal(`"${adapter.sha256}"`, etag);

    const redirected = await call(apis[1], `/v1/adapters/${adapter.id}/download`, { redirect: "manual" });
    assert.equal(redirected.status, 302);
    assert.equal(redirected.headers.get("etag"), etag);
    const direct = await fetch(redirected.headers.get("location")!);
    assert.equal(direct.status, 200);
    assert.deepEqual(Buffer.from(await direct.arrayBuffer()), bytes);
    for (const api of apis) assert.equal((await call(api, `/v1/adapters/${adapter.id}/download`, { headers: { "if-none-match": etag }, redirect: "manual" })).status, 304);

    // Serving reads the adapter folder locally: the API that never saw it fetches it from S3.
    const predicted = await call(apis[1], `/v1/adapters/${adapter.id}/predict`, { method: "POST", body: JSON.stringify({ inputs: ["a wonderful film"] }) });
    assert.equal(predicted.status, 200, await predicted.clone().text());
  });

  it("holds one key's rate limit across both APIs: requests beyond it get 429 from either", async () => {
    const statuses: number[] = [];
    for (let index = 0; index < RATE_LIMIT; index += 1) statuses.push((await call(apis[index % 2], "/v1/datasets", { key: keyB })).status);
    assert.deepEqual(statuses, Array(RATE_LIMIT).fill(200));
    for (const api of apis) {
      const limited = await call(api, "/v1/datasets", { key: keyB });
      assert.equal(limited.status, 429, `${api.url} let request ${RATE_LIMIT + 1} through`);
      assert.equal(((await limited.json()) as { error: { code: string } }).error.code, "rate_limited");
      assert.ok(Number(limited.headers.get("retry-after")) > 0);
    }
    // Another key is counted on its own.
    assert.equal((await call(apis[1], "/v1/datasets", { key: keyA })).status, 200);
  });
});
