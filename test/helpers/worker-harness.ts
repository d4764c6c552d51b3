// Real worker processes and real job rows for the worker's integration tests: each test
// file gets its own database, Redis, queue prefix and DATA_DIR, and spawns `services/worker/main.ts`
// exactly as `npm run worker` does, so kill -9 and SIGTERM hit a real process.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Queue } from "bullmq";
import pg from "pg";
import type { Redis } from "ioredis";
import { FsArtifactStore, type ArtifactStore } from "../../services/common/artifacts.ts";
import type { PrismaClient } from "../../services/common/db.ts";
import type { Job } from "../../services/common/generated/prisma/client.ts";
import { createFineTuneQueue, createRedis, enqueueFineTune, type FineTunePayload } from "../../services/common/queue.ts";
import type { TestApi } from "./api.ts";
import { freePort, PrivateRedis } from "./redis-server.ts";
import { createTestDatabase, testQueuePrefix, type TestDatabase } from "./services.ts";
import { trainingFixture, type TrainingFixture } from "./training-fixture.ts";

const repoRoot = path.resolve(import.meta.dirname, "../..");

/**
 * Polls `probe` until it yields something. `what` names the wait in the failure message; as a
 * function it is read only on failure, so process logs it includes are the ones at that moment.
 */
export async function waitFor<T>(probe: () => Promise<T | undefined | null | false>, timeoutMs: number, what: string | (() => string)): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${typeof what === "function" ? what() : what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * Holds training at a checkpoint, whatever the machine's speed: the engine goes on after a
 * checkpoint only once the worker has recorded it in Postgres, and recording it waits on a lock
 * held here. With `step`, only that checkpoint of `jobId` is held (an uncommitted row with its
 * key); without, every checkpoint of every job (the table is locked).
 */
export class CheckpointHold {
  private constructor(
    private readonly client: pg.Client,
    private readonly what: string,
  ) {}

  static async take(databaseUrl: string, at?: { jobId: string; step: number }): Promise<CheckpointHold> {
    const client = new pg.Client({ connectionString: databaseUrl, application_name: "test-checkpoint-hold" });
    // A test that fails while holding drops its database under this connection.
    client.on("error", () => {});
    await client.connect();
    await client.query("BEGIN");
    if (at) {
      await client.query(`INSERT INTO "Checkpoint" (id, "jobId", step, "storageKey", "sizeBytes") VALUES (gen_random_uuid(), $1, $2, 'held-by-test', 0)`, [at.jobId, at.step]);
    } else {
      await client.query(`LOCK TABLE "Checkpoint" IN EXCLUSIVE MODE`);
    }
    return new CheckpointHold(client, at ? `the checkpoint at step ${at.step} of job ${at.jobId}` : "the first checkpoint");
  }

  /** Resolves once a worker is waiting to record the held checkpoint, i.e. its training is paused there. */
  async reached(timeoutMs: number, log: () => string): Promise<void> {
    await waitFor(
      // pg_locks, not pg_stat_activity: the latter is a snapshot that stays fixed inside this transaction.
      async () => (await this.client.query("SELECT 1 FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")).rowCount,
      timeoutMs,
      () => `a worker to be held at ${this.what}\n${log()}`,
    );
  }

  /** Lets the held checkpoint be recorded (the test's own row is rolled back) and training go on. */
  async release(): Promise<void> {
    await this.client.query("ROLLBACK");
    await this.client.end();
  }
}

/** Resolves once `worker` logged that it is stopping a run for `reason` (cancel, timeout, shutdown). */
export function stopRequested(worker: ServiceProcess, reason: string, timeoutMs = 30_000): Promise<true> {
  return waitFor(async () => worker.log.includes(`"reason":"${reason}"`) && worker.log.includes("stopping the run"), timeoutMs, () => `the worker to stop the run (${reason})\n${worker.log}`);
}

/** A service started exactly as `npm run worker` or `npm run api` does, so kill -9 and SIGTERM hit a real process. */
export class ServiceProcess {
  private output = "";
  readonly exited: Promise<number | null>;

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = once(child, "exit").then(([code]) => code as number | null);
  }

  static worker(env: Record<string, string>): ServiceProcess {
    return ServiceProcess.start("services/worker/main.ts", env);
  }

  static api(env: Record<string, string>): ServiceProcess {
    return ServiceProcess.start("services/api/server.ts", env);
  }

  private static start(entry: string, env: Record<string, string>): ServiceProcess {
    const child = spawn(process.execPath, ["--import", "tsx", entry], {
      cwd: repoRoot,
      env: { ...process.env, LOG_LEVEL: "info", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    return new ServiceProcess(child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** True until the process has exited. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Everything the process logged, for assertion messages. */
  get log(): string {
    return this.output;
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill("SIGKILL");
    await this.exited;
  }
}

/** One test file's world for real worker processes: its database, a private Redis and queue, DATA_DIR and MODELS_DIR, the training fixture, and every worker it started. */
/** Serves the test API on a free local port and starts a worker process on its database, queue, data and models. */
export async function serveWithWorker(api: TestApi, env: Record<string, string> = {}): Promise<{ baseUrl: string; worker: ServiceProcess }> {
  await api.app.listen({ host: "127.0.0.1", port: 0 });
  const baseUrl = `http://127.0.0.1:${(api.app.server.address() as { port: number }).port}`;
  const worker = ServiceProcess.worker({
    DATABASE_URL: api.db.url,
    REDIS_URL: api.config.redisUrl,
    QUEUE_PREFIX: String(api.queue.opts.prefix),
    DATA_DIR: api.config.dataDir,
    MODELS_DIR: api.modelsDir,
    ...env,
  });
  return { baseUrl, worker };
}

export interface WorkerSuite {
  db: TestDatabase;
  redis: Redis;
  queue: Queue<FineTunePayload>;
  store: ArtifactStore;
  fixture: TrainingFixture;
  /** Starts a worker with this file's environment plus `env`; `close` kills it if it still runs. */
  startWorker(env?: Record<string, string>): ServiceProcess;
  /** A `waitFor` probe that yields the job once it has succeeded, failed or been cancelled. */
  finished(jobId: string): () => Promise<Job | undefined>;
  /** Everything every started worker logged, for assertion messages. */
  logs(): string;
  close(): Promise<void>;
}

/** `label` names the database (worker_<label>), the queue prefix and the temporary folders. */
export async function createWorkerSuite(label: string): Promise<WorkerSuite> {
  const db = await createTestDatabase(`worker_${label}`);
  const redisServer = new PrivateRedis(await freePort());
  await redisServer.start();
  const redis = createRedis(redisServer.url, { forWorker: true });
  const queuePrefix = testQueuePrefix(label);
  const queue = createFineTuneQueue(redis, queuePrefix);
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), `lora-${label}-data-`));
  const modelsDir = await fs.mkdtemp(path.join(os.tmpdir(), `lora-${label}-models-`));
  const fixture = await trainingFixture(modelsDir);
  const suiteEnv = {
    DATABASE_URL: db.url,
    REDIS_URL: redisServer.url,
    QUEUE_PREFIX: queuePrefix,
    DATA_DIR: dataDir,
    MODELS_DIR: modelsDir,
    TRAINER_BACKEND: process.env.TRAINER_BACKEND ?? "auto",
    WORKER_LOCK_DURATION_MS: "2000",
    WORKER_STALLED_INTERVAL_MS: "1000",
    RECONCILE_INTERVAL_MS: "1000",
    SHUTDOWN_TIMEOUT_MS: "25000",
  };
  const workers: ServiceProcess[] = [];
  return {
    db,
    redis,
    queue,
    store: new FsArtifactStore(dataDir),
    fixture,
    startWorker: (env = {}) => {
      const worker = ServiceProcess.worker({ ...suiteEnv, ...env });
      workers.push(worker);
      return worker;
    },
    finished: (jobId) => async () => {
      const job = await db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
      return ["succeeded", "failed", "cancelled"].includes(job.status) ? job : undefined;
    },
    logs: () => workers.map((worker) => worker.log).join("\n"),
    close: async () => {
      await Promise.all(workers.map((worker) => worker.stop()));
      await queue.close();
      redis.disconnect();
      await redisServer.stop();
      await db.drop();
    },
  };
}

export interface JobSpec {
  modelDir: string;
  datasetFile: string;
  hyperparameters: Record<string, unknown>;
  lora?: Record<string, unknown>;
  validationSplit?: number;
  maxAttempts?: number;
}

/** Inserts tenant, base model, dataset and job rows as the API would, and enqueues the job. */
export async function submitJob(
  prisma: PrismaClient,
  store: ArtifactStore,
  queue: Queue<FineTunePayload> | undefined,
  spec: JobSpec,
): Promise<string> {
  const tenant = await prisma.tenant.upsert({ where: { name: "worker-tests" }, create: { name: "worker-tests" }, update: {} });
  const modelId = path.basename(spec.modelDir);
  const config = JSON.parse(await fs.readFile(path.join(spec.modelDir, "config.json"), "utf8").catch(() => "{}")) as Record<string, unknown>;
  await prisma.baseModel.upsert({
    where: { id: modelId },
    create: {
      id: modelId,
      path: spec.modelDir,
      architecture: String((config.architectures as string[] | undefined)?.[0] ?? "unknown"),
      modelType: String(config.model_type ?? "unknown"),
      tasks: ["classification"],
      config: config as object,
    },
    update: {},
  });
  const bytes = await fs.readFile(spec.datasetFile);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const storageKey = `datasets/${sha256}.jsonl`;
  await fs.mkdir(path.dirname(store.pathOf(storageKey)), { recursive: true });
  await fs.writeFile(store.pathOf(storageKey), bytes);
  const rows = bytes.toString("utf8").split("\n").filter((line) => line.trim() !== "").length;
  const dataset = await prisma.dataset.create({
    data: { tenantId: tenant.id, name: path.basename(spec.datasetFile), format: "classification", rows, sizeBytes: BigInt(bytes.length), sha256, storageKey, stats: {} },
  });
  const job = await prisma.job.create({
    data: {
      tenantId: tenant.id,
      task: "classification",
      baseModelId: modelId,
      trainDatasetId: dataset.id,
      validationSplit: spec.validationSplit ?? 0.2,
      loraConfig: (spec.lora ?? { r: 4, alpha: 8, dropout: 0 }) as object,
      hyperparameters: spec.hyperparameters as object,
      maxAttempts: spec.maxAttempts ?? 3,
      enqueuedAt: new Date(),
    },
  });
  if (queue) await enqueueFineTune(queue, job, 5000);
  return job.id;
}
