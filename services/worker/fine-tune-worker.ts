// The worker process's moving parts: a BullMQ consumer with one sandbox per concurrency
// slot, and the reconciler that puts back into Redis whatever Postgres says is unfinished.
import { Worker, type Job as QueueJob } from "bullmq";
import type { Redis } from "ioredis";
import type { ArtifactStore } from "../common/artifacts.ts";
import { isDatabaseUnavailable, type OutageLog, type PrismaClient } from "../common/db.ts";
import { UNFINISHED_STATUSES } from "../common/job-status.ts";
import type { Logger } from "../common/logger.ts";
import { createFineTuneQueue, createRedis, FINE_TUNE_QUEUE, type FineTunePayload } from "../common/queue.ts";
import { reconcileQueue } from "../common/reconcile.ts";
import { JobRunner } from "./job-runner.ts";
import type { LocalCache } from "./local-cache.ts";
import { Sandbox } from "./sandbox.ts";
import type { WorkerSettings } from "./settings.ts";

export interface FineTuneWorkerDeps {
  settings: WorkerSettings;
  logger: Logger;
  prisma: PrismaClient;
  store: ArtifactStore;
  outages: OutageLog;
  cache?: LocalCache;
}

export class FineTuneWorker {
  private readonly runner: JobRunner;
  private readonly idleSandboxes: Sandbox[];
  private readonly allSandboxes: Sandbox[];
  private readonly workerRedis: Redis;
  private readonly queueRedis: Redis;
  private readonly worker: Worker<FineTunePayload, string>;
  private reconcileTimer: NodeJS.Timeout | undefined;
  private reconciling: Promise<void> | undefined;

  constructor(private readonly deps: FineTuneWorkerDeps) {
    const { settings, logger } = deps;
    this.runner = new JobRunner(deps);
    this.allSandboxes = Array.from({ length: settings.workerConcurrency }, () => new Sandbox(settings, logger));
    this.idleSandboxes = [...this.allSandboxes];
    this.workerRedis = createRedis(settings.redisUrl, { forWorker: true });
    this.queueRedis = createRedis(settings.redisUrl, { forWorker: true });
    for (const redis of [this.workerRedis, this.queueRedis]) {
      redis.on("error", (error) => logger.warn({ err: error.message }, "redis connection error"));
    }
    this.worker = new Worker<FineTunePayload, string>(FINE_TUNE_QUEUE, (job, token) => this.process(job, token), {
      connection: this.workerRedis,
      prefix: settings.queuePrefix,
      concurrency: settings.workerConcurrency,
      lockDuration: settings.lockDurationMs,
      stalledInterval: settings.stalledIntervalMs,
      // Postgres counts attempts and gives up; BullMQ must never fail a stalled job by itself.
      maxStalledCount: Number.MAX_SAFE_INTEGER,
      autorun: false,
    });
    this.worker.on("error", (error) => logger.warn({ err: error.message }, "queue worker error"));
    this.worker.on("stalled", (jobId) => logger.warn({ jobId }, "a stalled job was handed back to the queue"));
  }

  private async process(job: QueueJob<FineTunePayload>, token: string | undefined): Promise<string> {
    const sandbox = this.idleSandboxes.pop();
    if (!sandbox) throw new Error("no idle sandbox although BullMQ respects the concurrency");
    try {
      return await this.runner.process(job, token, sandbox);
    } finally {
      this.idleSandboxes.push(sandbox);
    }
  }

  async start(): Promise<void> {
    await this.reconcile();
    void this.worker.run();
    this.reconcileTimer = setInterval(() => void this.reconcile(), this.deps.settings.reconcileIntervalMs);
    this.deps.logger.info(
      { workerId: this.deps.settings.workerId, concurrency: this.deps.settings.workerConcurrency },
      "worker started",
    );
  }

  /** Puts every unfinished job that Redis has lost back in the queue; one pass at a time. */
  reconcile(): Promise<void> {
    this.reconciling ??= (async () => {
      const queue = createFineTuneQueue(this.queueRedis, this.deps.settings.queuePrefix);
      try {
        const result = await reconcileQueue(this.deps.prisma, queue, {
          // A running job whose worker died must be found again, so every unfinished status counts.
          statuses: [...UNFINISHED_STATUSES],
          enqueueTimeoutMs: this.deps.settings.enqueueTimeoutMs,
        });
        if (result.enqueued.length > 0) this.deps.logger.warn({ jobIds: result.enqueued }, "re-enqueued jobs Redis had lost");
      } catch (error) {
        if (isDatabaseUnavailable(error)) this.deps.outages.lost(error);
        else this.deps.logger.warn({ err: error }, "reconciling the queue with Postgres failed; trying again later");
      } finally {
        await queue.close();
        this.reconciling = undefined;
      }
    })();
    return this.reconciling;
  }

  /** Checkpoints and hands back running jobs, then stops taking jobs and frees everything. */
  async stop(): Promise<void> {
    clearInterval(this.reconcileTimer);
    this.runner.handBackAll();
    await this.worker.close();
    await this.reconciling;
    await Promise.all(this.allSandboxes.map((sandbox) => sandbox.terminate()));
    this.workerRedis.disconnect();
    this.queueRedis.disconnect();
  }
}
