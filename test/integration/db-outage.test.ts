// Postgres going away under a running service: a private server is stopped for over 10 s
// while a job trains and 16 clients poll the API, then started again. The API answers 503
// database_unavailable, never 500, and serves again by itself; the worker's job finishes
// with the metrics of a run that saw no outage. Killing every idle connection crashes nothing.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { PrivatePostgres } from "../helpers/private-postgres.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { testQueuePrefix } from "../helpers/services.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { CheckpointHold, ServiceProcess, waitFor } from "../helpers/worker-harness.ts";

const API_KEY = "outage-test-api-key-0123456789";
const POLLERS = 16;
const OUTAGE_MS = 10_500;

interface Answer {
  status: number;
  code?: string;
  retryAfter?: string | null;
  at: number;
}

describe("a Postgres outage", () => {
  let postgres: PrivatePostgres;
  let redis: PrivateRedis;
  let api: ServiceProcess;
  let worker: ServiceProcess;
  let baseUrl: string;
  let fixture: TrainingFixture;
  let root: string;
  const logs = () => `--- api\n${api.log.slice(-6000)}\n--- worker\n${worker.log.slice(-6000)}`;
  const call = (route: string, init: RequestInit = {}) => fetch(`${baseUrl}${route}`, { ...init, headers: { authorization: `Bearer ${API_KEY}`, ...init.headers } });

  before(async () => {
    postgres = await PrivatePostgres.create();
    redis = new PrivateRedis(await freePort());
    await redis.start();
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-outage-"));
    fixture = await trainingFixture(path.join(root, "models"));
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    const env = {
      DATABASE_URL: postgres.url,
      REDIS_URL: redis.url,
      QUEUE_PREFIX: testQueuePrefix("outage"),
      DATA_DIR: path.join(root, "data"),
      MODELS_DIR: path.join(root, "models"),
    };
    api = ServiceProcess.api({ ...env, PORT: String(port), BOOTSTRAP_API_KEY: API_KEY, TRAINER_BACKEND: "cpu", RATE_LIMIT_PER_MINUTE: "10000000" });
    worker = ServiceProcess.worker({ ...env, CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps), RECONCILE_INTERVAL_MS: "1000" });
    await waitFor(async () => (await fetch(`${baseUrl}/readyz`).catch(() => undefined))?.status === 200, 60_000, () => `the API to be ready\n${api.log}`);
  });

  after(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    await redis?.stop();
    await postgres?.destroy();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  async function submitJob(datasetId: string): Promise<string> {
    const created = await call("/v1/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, validationSplit: fixture.job.validationSplit, lora: fixture.job.lora, hyperparameters: fixture.job.hyperparameters }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    return ((await created.json()) as { id: string }).id;
  }

  const jobOf = async (jobId: string) => (await (await call(`/v1/jobs/${jobId}`)).json()) as { status: string; attempts: number; metrics: Record<string, unknown> | null; error: unknown };
  const finished = (jobId: string) => async () => {
    const job = await jobOf(jobId);
    return ["succeeded", "failed", "cancelled"].includes(job.status) ? job : undefined;
  };

  it("is answered with 503s while it lasts, and the job training through it ends as if nothing happened", async (t) => {
    const upload = new FormData();
    upload.append("file", new Blob([await fs.readFile(fixture.job.datasetFile)]), "sentiment.jsonl");
    const dataset = await call("/v1/datasets", { method: "POST", body: upload });
    assert.equal(dataset.status, 201, await dataset.clone().text());
    const { id: datasetId } = (await dataset.json()) as { id: string };

    // Held at its first checkpoint, the job is surely training when Postgres stops.
    const hold = await CheckpointHold.take(postgres.url);
    const jobId = await submitJob(datasetId);
    await hold.reached(60_000, logs);
    assert.equal((await jobOf(jobId)).status, "running");
    const apiPid = api.pid;

    const answers: Answer[] = [];
    let polling = true;
    const poll = async (index: number) => {
      for (let turn = 0; polling; turn++) {
        const route = (index + turn) % 2 === 0 ? `/v1/jobs/${jobId}` : "/v1/jobs?limit=5";
        const response = await call(route);
        const body = (await response.json()) as { error?: { code: string } };
        answers.push({ status: response.status, code: body.error?.code, retryAfter: response.headers.get("retry-after"), at: Date.now() });
        await sleep(10);
      }
    };
    const pollers = Array.from({ length: POLLERS }, (_, index) => poll(index));

    const stoppedAt = Date.now();
    await postgres.stop();
    await waitFor(async () => answers.some((answer) => answer.status === 503), 10_000, () => `a 503 while Postgres is down\n${logs()}`);
    assert.equal((await fetch(`${baseUrl}/healthz`)).status, 200);
    const ready = await fetch(`${baseUrl}/readyz`);
    assert.equal(ready.status, 503);
    const readiness = (await ready.json()) as { checks: { postgres: { ok: boolean }; redis: { ok: boolean } } };
    assert.equal(readiness.checks.postgres.ok, false);
    assert.equal(readiness.checks.redis.ok, true);
    assert.equal((await fetch(`${baseUrl}/metrics`)).status, 200);
    await sleep(Math.max(0, stoppedAt + OUTAGE_MS - Date.now()));
    await postgres.start();
    const restartedAt = Date.now();

    const job = await waitFor(finished(jobId), 120_000, () => `the job to finish after the outage\n${logs()}`);
    await waitFor(async () => answers.some((answer) => answer.at > restartedAt && answer.status === 200), 30_000, "a 200 after the restart");
    polling = false;
    await Promise.all(pollers);

    const unexpected = answers.filter((answer) => !(answer.status === 200 || (answer.status === 503 && answer.code === "database_unavailable" && answer.retryAfter)));
    assert.deepEqual(unexpected.slice(0, 5), [], `${unexpected.length} unexpected answers of ${answers.length}`);
    assert.equal(answers.filter((answer) => answer.status === 500).length, 0);
    const unavailable = answers.filter((answer) => answer.status === 503).length;
    t.diagnostic(`${answers.length} answers: ${answers.length - unavailable} × 200, ${unavailable} × 503 database_unavailable; Postgres down ${restartedAt - stoppedAt} ms`);
    assert.ok(unavailable > 0);
    assert.ok(api.running && worker.running, logs());
    assert.equal(api.pid, apiPid);

    assert.equal(job.status, "succeeded", `${JSON.stringify(job.error)}\n${logs()}`);
    assert.equal(job.attempts, 1, "the outage cost the job no attempt");
    const reference = await waitFor(finished(await submitJob(datasetId)), 120_000, () => `the uninterrupted job to finish\n${logs()}`);
    assert.equal(reference.status, "succeeded");
    assert.ok(job.metrics && reference.metrics);
    assert.deepEqual(Object.keys(job.metrics).sort(), Object.keys(reference.metrics).sort());
    assertClose(job.metrics, reference.metrics, "metrics");
  });

  it("crashes no process when every idle connection is killed, and answers the next request", async () => {
    // Each process logs the dropped connections once; after that its pools hold no dead connection.
    const dropped = (service: ServiceProcess) => (service.log.match(/"msg":"postgres unavailable"/g) ?? []).length;
    const [apiBefore, workerBefore] = [dropped(api), dropped(worker)];
    const admin = new pg.Client({ connectionString: postgres.url });
    admin.on("error", () => {});
    await admin.connect();
    try {
      const killed = await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()");
      assert.ok(killed.rowCount! >= 2, "the API and the worker had connections open");
    } finally {
      await admin.end();
    }
    await waitFor(async () => dropped(api) > apiBefore && dropped(worker) > workerBefore, 10_000, () => `both processes to notice\n${logs()}`);
    const response = await call("/v1/jobs?limit=5");
    assert.equal(response.status, 200, await response.clone().text());
    assert.ok(api.running && worker.running, logs());
  });
});

/** Every number of a finished job's metrics (flat numbers and the evaluation report) within 1e-6 of the reference's. */
function assertClose(actual: unknown, expected: unknown, where: string): void {
  if (typeof expected === "number") {
    assert.ok(typeof actual === "number" && Math.abs(actual - expected) <= 1e-6, `${where}: ${JSON.stringify(actual)} after the outage, ${expected} without`);
  } else if (expected !== null && typeof expected === "object") {
    assert.ok(actual !== null && typeof actual === "object", `${where}: ${JSON.stringify(actual)} after the outage`);
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), where);
    for (const [key, value] of Object.entries(expected)) assertClose((actual as Record<string, unknown>)[key], value, `${where}.${key}`);
  } else {
    assert.deepEqual(actual, expected, where);
  }
}
