// Runs fine-tune jobs from the queue, one JobRun each, under a Postgres lease so that a job
// never trains twice at once, and tells BullMQ what became of each: finished, or back to the
// queue now or later.
import { DelayedError, WaitingError, type Job as QueueJob } from "bullmq";
import type { ArtifactStore } from "../common/artifacts.ts";
import { isDatabaseUnavailable, type OutageLog, type PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import type { FineTunePayload } from "../common/queue.ts";
import { Durable, type RetryPolicy } from "./durable.ts";
import { JobRecords } from "./job-records.ts";
import { JobRun, LEASE_BUSY_RETRY_MS, RETRY_BACKOFF_MS, type RunOutcome } from "./job-run.ts";
import { JobLease } from "./lease.ts";
import type { LocalCache } from "./local-cache.ts";
import { ProgressReporter } from "./progress-reporter.ts";
import type { Sandbox } from "./sandbox.ts";
import type { WorkerSettings } from "./settings.ts";

/** Steps are reported at most this often, as events, Job.progress and BullMQ progress. */
export const STEP_REPORT_INTERVAL_MS = 1000;

export interface RunnerDeps {
  settings: WorkerSettings;
  logger: Logger;
  prisma: PrismaClient;
  store: ArtifactStore;
  outages: OutageLog;
  databaseRetry?: RetryPolicy;
  /** The worker's bounded local copies of datasets. */
  cache?: LocalCache;
}

export class JobRunner {
  private readonly active = new Set<JobRun>();
  private shuttingDown = false;
  private readonly durable: Durable;

  constructor(private readonly deps: RunnerDeps) {
    this.durable = new Durable(deps.outages, deps.databaseRetry);
  }

  /** Stops every run at its next step boundary with a checkpoint; each then hands its job back. */
  handBackAll(): void {
    this.shuttingDown = true;
    for (const run of this.active) run.stop("shutdown");
  }

  async process(queueJob: QueueJob<FineTunePayload>, token: string | undefined, sandbox: Sandbox): Promise<string> {
    const outcome = await this.runUnderLease(queueJob, sandbox).catch((error): RunOutcome => {
      // Postgres or the artifact store failed us, not the job: let BullMQ bring it back.
      if (isDatabaseUnavailable(error)) this.deps.outages.lost(error);
      else this.deps.logger.error({ jobId: queueJob.data.jobId, err: error }, "could not run the job; it will be tried again");
      return { kind: "requeue", delayMs: RETRY_BACKOFF_MS };
    });
    if (outcome.kind === "final") return outcome.status;
    if (outcome.delayMs > 0) {
      await queueJob.moveToDelayed(Date.now() + outcome.delayMs, token);
      throw new DelayedError();
    }
    await queueJob.moveToWait(token);
    throw new WaitingError();
  }

  private async runUnderLease(queueJob: QueueJob<FineTunePayload>, sandbox: Sandbox): Promise<RunOutcome> {
    const { settings, logger, prisma, store, outages } = this.deps;
    const jobId = queueJob.data.jobId;
    const lease = await JobLease.tryAcquire(settings.databaseUrl, jobId, logger);
    if (!lease) {
      // Another run of this job is alive (Redis forgot about it, or its lock lapsed):
      // come back later rather than run it twice.
      logger.info({ jobId }, "job is being run elsewhere; looking again later");
      return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
    }
    const records = new JobRecords(prisma, store, jobId, settings.workerId, this.deps.cache);
    const reportTo = (progress: object) => queueJob.updateProgress(progress);
    const reporter = new ProgressReporter(records, this.durable, outages, logger.child({ jobId }), STEP_REPORT_INTERVAL_MS, reportTo, () => this.shuttingDown);
    const run = new JobRun(records, sandbox, reporter, this.durable, settings, logger);
    lease.whenLost(() => {
      logger.error({ jobId }, "lost the job's Postgres lease to another run; stopping this one");
      run.stop("lease_lost");
    });
    this.active.add(run);
    try {
      if (this.shuttingDown) run.stop("shutdown");
      return await run.execute();
    } finally {
      this.active.delete(run);
      run.end();
      await lease.release();
    }
  }
}
