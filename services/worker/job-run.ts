// One run of one job: what happens to it. Before training: run it, or finish it as it stands
// (cancelled, paused, out of attempts, out of time). While training: watch for cancel, pause,
// timeout, shutdown and a lost lease. After: succeed, fail, retry, pause, or hand it back. Once the run has
// claimed the job, every write that decides its fate waits out a Postgres outage (Durable).
import { isDatabaseUnavailable } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import { isFinished } from "../common/job-status.ts";
import type { CompositionRequest, DataQuality, Hyperparameters, LoraOptions, TrainOptions, TrainResult } from "../trainer/index.ts";
import type { Durable } from "./durable.ts";
import type { StoredComposition } from "./job-inputs.ts";
import type { JobError, JobRecords } from "./job-records.ts";
import type { ProgressReporter } from "./progress-reporter.ts";
import { SandboxLost, TrainingFailed, type Sandbox } from "./sandbox.ts";

/** How often a running job looks for a cancel request in Postgres. */
const CANCEL_POLL_INTERVAL_MS = 1000;
/** After asking the engine to stop, how long before the sandbox thread is ended by force. */
const CANCEL_GRACE_MS = 3000;
/** When another run holds the job, look again after this long. */
export const LEASE_BUSY_RETRY_MS = 5000;
/** A retry after a crashed sandbox waits this long times the attempt. */
export const RETRY_BACKOFF_MS = 2000;

export type StopReason = "cancel" | "pause" | "timeout" | "shutdown" | "lease_lost";
export type RunOutcome = { kind: "final"; status: string } | { kind: "requeue"; delayMs: number };
export type RunRecords = Pick<
  JobRecords,
  | "jobId" | "load" | "claim" | "cancelRequested" | "stopRequested" | "pause" | "newestCheckpoint" | "sourceCheckpoint" | "sourceAdapter" | "modelPath" | "datasetPath" | "compositionSources" | "checkpointDir" | "scratchFolder" | "removeLocalCopies" | "event"
  | "storeAdapter" | "discardAdapter" | "succeed" | "cancel" | "fail" | "requeueFailedAttempt" | "handBack"
>;
export type RunSandbox = Pick<Sandbox, "run" | "requestStop" | "clearStop" | "terminate">;

export interface RunSettings {
  workerId: string;
  jobTimeoutMs: number;
  shutdownTimeoutMs: number;
  checkpointEverySteps: number;
}

export class JobRun {
  private stopReason: StopReason | undefined;
  private ended = false;
  private forceTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly records: RunRecords,
    private readonly sandbox: RunSandbox,
    private readonly reporter: ProgressReporter,
    private readonly durable: Durable,
    private readonly settings: RunSettings,
    private readonly logger: Logger,
  ) {}

  get jobId(): string {
    return this.records.jobId;
  }

  /** Once the worker is shutting down, writes stop waiting out an outage: the next worker resumes the job. */
  private readonly shuttingDown = () => this.stopReason === "shutdown";

  stop(reason: StopReason): void {
    // A cancel poll still in flight when the run ended must not reach the sandbox's next job.
    if (this.stopReason || this.ended) return;
    this.stopReason = reason;
    this.logger.info({ jobId: this.jobId, reason }, "stopping the run at its next step boundary");
    const checkpointFirst = reason === "shutdown" || reason === "pause";
    this.sandbox.requestStop(checkpointFirst ? "checkpoint" : "cancel");
    // A shutdown (or pause) may wait for its checkpoint almost as long as a deploy allows.
    const grace = checkpointFirst ? Math.max(1000, this.settings.shutdownTimeoutMs - 5000) : CANCEL_GRACE_MS;
    this.forceTimer = setTimeout(() => {
      this.logger.warn({ jobId: this.jobId, reason }, "the sandbox did not stop in time; ending it");
      void this.sandbox.terminate();
    }, grace);
    this.forceTimer.unref();
  }

  /** Nothing of this run may reach the sandbox's next job. */
  end(): void {
    this.ended = true;
    clearTimeout(this.forceTimer);
    this.sandbox.clearStop();
  }

  async execute(): Promise<RunOutcome> {
    const job = await this.records.load();
    if (!job) {
      this.logger.warn({ jobId: this.jobId }, "queued job has no database row; dropping it");
      return { kind: "final", status: "missing" };
    }
    if (isFinished(job.status)) return { kind: "final", status: job.status };
    if (job.status === "cancelling" || job.cancelRequestedAt) return this.finishCancelled("cancelled before it could run");
    // Paused while it waited: a stale queue entry; resume queues the job again.
    if (job.status === "paused") return { kind: "final", status: "paused" };
    if (job.pauseRequestedAt && (await this.durable.write(() => this.records.pause(undefined), this.shuttingDown))) return { kind: "final", status: "paused" };
    if (job.attempts >= job.maxAttempts) {
      const previous = (job.error as JobError | null)?.message;
      return this.finishFailed({
        code: "max_attempts_exceeded",
        message: `gave up after ${job.attempts} attempt(s): ` + (previous ?? "the last attempt ended without finishing (its worker crashed or lost the job)"),
      });
    }
    const startedAt = job.startedAt ?? new Date();
    const remainingMs = startedAt.getTime() + this.settings.jobTimeoutMs - Date.now();
    if (remainingMs <= 0) return this.finishFailed(timeoutError(this.settings.jobTimeoutMs));
    if (this.stopReason === "shutdown") return { kind: "requeue", delayMs: 0 };
    const attempt = job.attempts + 1;
    if (!(await this.records.claim(attempt, startedAt))) return this.execute();

    // Its own newest checkpoint first: a job that started from another's has made its own since.
    const own = await this.durable.write(() => this.records.newestCheckpoint(), this.shuttingDown);
    const { fromCheckpointJobId: sourceJob, fromCheckpointStep: sourceStep, fromAdapterId: sourceAdapter } = job;
    const resume = own ?? (sourceJob && sourceStep !== null ? await this.durable.write(() => this.records.sourceCheckpoint(sourceJob, sourceStep), this.shuttingDown) : undefined);
    const initFrom = !resume && sourceAdapter ? await this.durable.write(() => this.records.sourceAdapter(sourceAdapter), this.shuttingDown) : undefined;
    if (!own && ((sourceJob && !resume) || (sourceAdapter && !initFrom))) {
      const what = sourceJob ? `job ${sourceJob}'s checkpoint at step ${sourceStep}` : `adapter ${sourceAdapter}`;
      return this.finishFailed({ code: "source_gone", message: `the job starts from ${what}, which no longer exists` });
    }
    const origin = own ? `resumes from step ${own.step}` : resume ? `continues job ${sourceJob} from step ${resume.step}` : initFrom ? `starts from adapter ${sourceAdapter}` : "started";
    await this.durable.write(
      () =>
        this.records.event("info", "started", `attempt ${attempt} ${origin}`, {
          attempt,
          workerId: this.settings.workerId,
          resumeFromStep: resume?.step ?? null,
          ...(!own && resume ? { fromCheckpoint: { jobId: sourceJob, step: resume.step } } : {}),
          ...(initFrom ? { fromAdapter: sourceAdapter } : {}),
        }),
      this.shuttingDown,
    );
    this.logger.info({ jobId: this.jobId, attempt, resumeFromStep: resume?.step }, "training started");

    const outDir = await this.records.scratchFolder();
    let modelDir: string;
    let trainFile: string;
    let validationFile: string | undefined;
    let composition: CompositionRequest | undefined;
    try {
      modelDir = await this.records.modelPath(job);
      trainFile = await this.records.datasetPath(job.trainDataset.storageKey);
      validationFile = job.validationDataset ? await this.records.datasetPath(job.validationDataset.storageKey) : undefined;
      composition = job.composition ? await this.records.compositionSources(job.composition as unknown as StoredComposition) : undefined;
    } catch (error) {
      await this.records.removeLocalCopies(outDir);
      throw error;
    }
    const options: TrainOptions = {
      modelDir,
      trainFile,
      validationFile,
      validationSplit: job.validationSplit ?? undefined,
      outDir,
      lora: job.loraConfig as unknown as LoraOptions,
      hyper: { checkpointEverySteps: this.settings.checkpointEverySteps, ...(job.hyperparameters as unknown as Hyperparameters) },
      checkpointDir: this.records.checkpointDir(),
      resumeFrom: resume?.dir,
      initFrom,
      baseModelName: job.baseModelId,
      // The preflight report the job was accepted with: the adapter's model card cites its findings.
      ...(job.qualityReport ? { dataQuality: job.qualityReport as unknown as DataQuality } : {}),
      ...(composition ? { composition } : {}),
    };
    return this.train(options, remainingMs, attempt, job.maxAttempts);
  }

  private async train(options: TrainOptions, remainingMs: number, attempt: number, maxAttempts: number): Promise<RunOutcome> {
    const timeoutTimer = setTimeout(() => this.stop("timeout"), remainingMs);
    const cancelWatch = setInterval(() => void this.watchForCancel(), CANCEL_POLL_INTERVAL_MS);
    try {
      let result: TrainResult;
      try {
        result = await this.sandbox.run(options, {
          onStep: (report) => this.reporter.step(report),
          onEvaluation: (report) => this.reporter.evaluation(report),
          onCheckpoint: ({ step, dir }) => this.reporter.checkpoint(step, dir),
        });
      } catch (error) {
        await this.reporter.drain();
        return await this.afterError(error, attempt, maxAttempts);
      }
      await this.reporter.drain();
      return await this.afterTraining(result, options.outDir);
    } finally {
      clearTimeout(timeoutTimer);
      clearInterval(cancelWatch);
      // The sandbox has stopped: no reason left to end its thread by force.
      clearTimeout(this.forceTimer);
      await this.records.removeLocalCopies(options.outDir);
    }
  }

  private async afterTraining(result: TrainResult, outDir: string): Promise<RunOutcome> {
    if (result.outcome !== "completed" || this.stopReason === "lease_lost") return this.afterStop(result.step);
    const stored = await this.records.storeAdapter(outDir);
    let published = false;
    try {
      published = await this.durable.write(() => this.records.succeed(stored, result), this.shuttingDown);
    } finally {
      if (!published) await this.records.discardAdapter(stored);
    }
    if (published) return { kind: "final", status: "succeeded" };
    if (await this.durable.write(() => this.records.cancelRequested(), this.shuttingDown)) return this.finishCancelled("cancelled as it finished");
    // The row is no longer ours to finish: another worker holds the job now.
    return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
  }

  /** The engine or sandbox stopped because we asked it to: act on why. */
  private async afterStop(step: number | undefined): Promise<RunOutcome> {
    switch (this.stopReason) {
      case "cancel":
        return this.finishCancelled(step === undefined ? "cancelled" : `cancelled at step ${step}`);
      case "timeout":
        return this.finishFailed(timeoutError(this.settings.jobTimeoutMs));
      case "lease_lost":
        // Another worker may own the job now: write nothing, let the lease decide later.
        return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
      case "pause":
        if (await this.durable.write(() => this.records.pause(step), this.shuttingDown)) {
          this.logger.info({ jobId: this.jobId, step }, "job paused");
          return { kind: "final", status: "paused" };
        }
        // Resumed before it paused, or cancelled meanwhile.
        if (await this.durable.write(() => this.records.cancelRequested(), this.shuttingDown)) return this.finishCancelled(`cancelled at step ${step}`);
        await this.durable.write(() => this.records.handBack(step), this.shuttingDown);
        return { kind: "requeue", delayMs: 0 };
      case "shutdown":
      case undefined:
        await this.durable.write(() => this.records.handBack(step), this.shuttingDown);
        this.logger.info({ jobId: this.jobId, step }, "job handed back");
        return { kind: "requeue", delayMs: 0 };
    }
  }

  private async afterError(error: unknown, attempt: number, maxAttempts: number): Promise<RunOutcome> {
    if ((error instanceof SandboxLost && this.stopReason) || this.stopReason === "lease_lost") return this.afterStop(undefined);
    if (error instanceof TrainingFailed) {
      this.logger.warn({ jobId: this.jobId, err: error }, "training failed");
      return this.finishFailed({ code: "training_failed", message: error.message });
    }
    // The sandbox died: not the job's fault, so try again.
    const message = error instanceof Error ? error.message : String(error);
    this.logger.error({ jobId: this.jobId, err: error, attempt }, "attempt ended unexpectedly");
    if (attempt >= maxAttempts) return this.finishFailed({ code: "max_attempts_exceeded", message: `gave up after ${attempt} attempt(s): ${message}` });
    await this.durable.write(() => this.records.requeueFailedAttempt(attempt, message), this.shuttingDown);
    return { kind: "requeue", delayMs: RETRY_BACKOFF_MS * attempt };
  }

  private async watchForCancel(): Promise<void> {
    try {
      const reason = await this.records.stopRequested();
      if (reason) this.stop(reason);
    } catch (error) {
      // Postgres being down is logged once by its pool; the next poll looks again.
      if (!isDatabaseUnavailable(error)) this.logger.warn({ jobId: this.jobId, err: error }, "could not look for a cancel request");
    }
  }

  private async finishCancelled(message: string): Promise<RunOutcome> {
    await this.durable.write(() => this.records.cancel(message), this.shuttingDown);
    this.logger.info({ jobId: this.jobId }, message);
    return { kind: "final", status: "cancelled" };
  }

  private async finishFailed(error: JobError): Promise<RunOutcome> {
    await this.durable.write(() => this.records.fail(error), this.shuttingDown);
    this.logger.warn({ jobId: this.jobId, error }, "job failed");
    return { kind: "final", status: "failed" };
  }
}

function timeoutError(timeoutMs: number): JobError {
  return { code: "job_timeout", message: `the job ran longer than the maximum of ${timeoutMs} ms (JOB_TIMEOUT_MS)` };
}
