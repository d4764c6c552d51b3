// Runs one fine-tune job from the queue: Postgres holds its state, the sandbox trains it.
// Every way a run can end (success, engine error, cancel, timeout, shutdown, a crashed
// sandbox, a crashed worker found on the next attempt) is decided and written here.
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { DelayedError, WaitingError, type Job as QueueJob } from "bullmq";
import { packAdapterFolder } from "../common/adapter-archive.ts";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Prisma, PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import type { FineTunePayload } from "../common/queue.ts";
import type { EvaluationReport, Hyperparameters, LoraOptions, StepReport, TrainOptions, TrainResult } from "../trainer/index.ts";
import { JobLease } from "./lease.ts";
import { SandboxLost, TrainingFailed, type Sandbox } from "./sandbox.ts";
import type { WorkerSettings } from "./settings.ts";
import { FINISHED_STATUSES, isFinished } from "../common/job-status.ts";

/** Steps are reported at most this often, as events, Job.progress and BullMQ progress. */
const STEP_REPORT_INTERVAL_MS = 1000;
/** How often a running job looks for a cancel request in Postgres. */
const CANCEL_POLL_INTERVAL_MS = 1000;
/** After asking the engine to stop, how long before the sandbox thread is ended by force. */
const CANCEL_GRACE_MS = 3000;
/** When another run holds the job's lease, look again after this long. */
const LEASE_BUSY_RETRY_MS = 5000;
/** A retry after a crashed sandbox or a database hiccup waits this long times the attempt. */
const RETRY_BACKOFF_MS = 2000;

type StopReason = "cancel" | "timeout" | "shutdown" | "lease_lost";


export interface RunnerDeps {
  settings: WorkerSettings;
  logger: Logger;
  prisma: PrismaClient;
  store: ArtifactStore;
}

interface JobError {
  code: string;
  message: string;
}

export const checkpointRoot = (jobId: string) => `jobs/${jobId}/checkpoints`;

export class JobRunner {
  private readonly active = new Set<ActiveRun>();
  private shuttingDown = false;

  constructor(private readonly deps: RunnerDeps) {}

  /** Stops every run at its next step boundary with a checkpoint; each then hands its job back. */
  handBackAll(): void {
    this.shuttingDown = true;
    for (const run of this.active) run.stop("shutdown");
  }

  async process(queueJob: QueueJob<FineTunePayload>, token: string | undefined, sandbox: Sandbox): Promise<string> {
    const outcome = await this.runUnderLease(queueJob, sandbox).catch((error): RunOutcome => {
      // Postgres or the artifact store failed us, not the job: let BullMQ bring it back.
      this.deps.logger.error({ jobId: queueJob.data.jobId, err: error }, "could not run the job; it will be tried again");
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
    const jobId = queueJob.data.jobId;
    const lease = await JobLease.tryAcquire(this.deps.settings.databaseUrl, jobId);
    if (!lease) {
      // Another run of this job is alive (Redis forgot about it, or its lock lapsed):
      // come back later rather than run it twice.
      this.deps.logger.info({ jobId }, "job is being run elsewhere; looking again later");
      return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
    }
    const run = new ActiveRun(this.deps, queueJob, sandbox);
    lease.whenLost(() => {
      this.deps.logger.error({ jobId }, "lost the job's Postgres lease; stopping its run");
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

type RunOutcome = { kind: "final"; status: string } | { kind: "requeue"; delayMs: number };

class ActiveRun {
  private stopReason: StopReason | undefined;
  private ended = false;
  private forceTimer: NodeJS.Timeout | undefined;
  private writes: Promise<void> = Promise.resolve();
  private lastStepReportAt = 0;
  private pendingStep: StepReport | undefined;
  private readonly jobId: string;

  constructor(
    private readonly deps: RunnerDeps,
    private readonly queueJob: QueueJob<FineTunePayload>,
    private readonly sandbox: Sandbox,
  ) {
    this.jobId = queueJob.data.jobId;
  }

  stop(reason: StopReason): void {
    // A cancel poll still in flight when the run ended must not reach the sandbox's next job.
    if (this.stopReason || this.ended) return;
    this.stopReason = reason;
    this.sandbox.requestStop(reason === "shutdown" ? "checkpoint" : "cancel");
    // A shutdown may wait for its checkpoint almost as long as the deploy allows.
    const grace = reason === "shutdown" ? Math.max(1000, this.deps.settings.shutdownTimeoutMs - 5000) : CANCEL_GRACE_MS;
    this.forceTimer = setTimeout(() => {
      this.deps.logger.warn({ jobId: this.jobId, reason }, "the sandbox did not stop in time; ending it");
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
    const { prisma, settings, logger } = this.deps;
    const job = await prisma.job.findUnique({
      where: { id: this.jobId },
      include: { baseModel: true, trainDataset: true, validationDataset: true },
    });
    if (!job) {
      logger.warn({ jobId: this.jobId }, "queued job has no database row; dropping it");
      return { kind: "final", status: "missing" };
    }
    if (isFinished(job.status)) return { kind: "final", status: job.status };
    if (job.status === "cancelling" || job.cancelRequestedAt) {
      await this.finishCancelled("cancelled before it could run");
      return { kind: "final", status: "cancelled" };
    }
    if (job.attempts >= job.maxAttempts) {
      const previous = (job.error as JobError | null)?.message;
      await this.finishFailed({
        code: "max_attempts_exceeded",
        message:
          `gave up after ${job.attempts} attempt(s): ` +
          (previous ?? "the last attempt ended without finishing (its worker crashed or lost the job)"),
      });
      return { kind: "final", status: "failed" };
    }
    const startedAt = job.startedAt ?? new Date();
    const remainingMs = startedAt.getTime() + settings.jobTimeoutMs - Date.now();
    if (remainingMs <= 0) {
      await this.finishFailed(timeoutError(settings.jobTimeoutMs));
      return { kind: "final", status: "failed" };
    }
    if (this.stopReason === "shutdown") return { kind: "requeue", delayMs: 0 };
    const attempt = job.attempts + 1;
    const claimed = await prisma.job.updateMany({
      where: { id: job.id, status: { in: ["queued", "running"] } },
      data: { status: "running", attempts: attempt, workerId: settings.workerId, startedAt },
    });
    if (claimed.count === 0) return this.execute();

    const resume = await this.newestCheckpoint();
    await this.event("info", "started", resume ? `attempt ${attempt} resumes from step ${resume.step}` : `attempt ${attempt} started`, {
      attempt,
      workerId: settings.workerId,
      resumeFromStep: resume?.step ?? null,
    });
    logger.info({ jobId: job.id, attempt, resumeFromStep: resume?.step }, "training started");

    const outDir = await this.deps.store.scratchPath(`adapter-${job.id}`);
    const options: TrainOptions = {
      modelDir: job.baseModel.path,
      trainFile: this.deps.store.pathOf(job.trainDataset.storageKey),
      validationFile: job.validationDataset ? this.deps.store.pathOf(job.validationDataset.storageKey) : undefined,
      validationSplit: job.validationSplit ?? undefined,
      outDir,
      lora: job.loraConfig as unknown as LoraOptions,
      hyper: { checkpointEverySteps: settings.checkpointEverySteps, ...(job.hyperparameters as unknown as Hyperparameters) },
      checkpointDir: this.deps.store.pathOf(checkpointRoot(job.id)),
      resumeFrom: resume?.dir,
      baseModelName: job.baseModelId,
    };

    const timeoutTimer = setTimeout(() => this.stop("timeout"), remainingMs);
    const cancelWatch = setInterval(() => void this.watchForCancel(), CANCEL_POLL_INTERVAL_MS);
    try {
      const result = await this.sandbox.run(options, {
        onStep: (report) => this.onStep(report),
        onEvaluation: (report) => this.onEvaluation(report),
        onCheckpoint: (checkpoint) => this.onCheckpoint(checkpoint),
      });
      this.flushStep();
      await this.writes;
      return await this.afterTraining(result, outDir);
    } catch (error) {
      this.flushStep();
      await this.writes;
      return await this.afterError(error, attempt, job.maxAttempts);
    } finally {
      clearTimeout(timeoutTimer);
      clearInterval(cancelWatch);
      // The sandbox has stopped: no reason left to end its thread by force.
      clearTimeout(this.forceTimer);
      await fs.rm(outDir, { recursive: true, force: true });
    }
  }

  private async afterTraining(result: TrainResult, outDir: string): Promise<RunOutcome> {
    if (result.outcome === "completed" && this.stopReason !== "lease_lost") {
      if (await this.finishSucceeded(result, outDir)) return { kind: "final", status: "succeeded" };
      if (await this.cancelRequested()) {
        await this.finishCancelled("cancelled as it finished");
        return { kind: "final", status: "cancelled" };
      }
      // The row is no longer ours to finish: another worker holds the job now.
      return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
    }
    return this.afterStop(result.step);
  }

  /** The engine or sandbox stopped because we asked it to: act on why. */
  private async afterStop(step: number | undefined): Promise<RunOutcome> {
    switch (this.stopReason) {
      case "cancel":
        await this.finishCancelled(step === undefined ? "cancelled" : `cancelled at step ${step}`);
        return { kind: "final", status: "cancelled" };
      case "timeout":
        await this.finishFailed(timeoutError(this.deps.settings.jobTimeoutMs));
        return { kind: "final", status: "failed" };
      case "lease_lost":
        // Another worker may own the job now: write nothing, let the lease decide later.
        return { kind: "requeue", delayMs: LEASE_BUSY_RETRY_MS };
      case "shutdown":
      case undefined:
        await this.handBack(step);
        return { kind: "requeue", delayMs: 0 };
    }
  }

  private async afterError(error: unknown, attempt: number, maxAttempts: number): Promise<RunOutcome> {
    const { logger } = this.deps;
    if ((error instanceof SandboxLost && this.stopReason) || this.stopReason === "lease_lost") return this.afterStop(undefined);
    if (error instanceof TrainingFailed) {
      logger.warn({ jobId: this.jobId, err: error }, "training failed");
      await this.finishFailed({ code: "training_failed", message: error.message });
      return { kind: "final", status: "failed" };
    }
    // The sandbox died or the database hiccuped: not the job's fault, so try again.
    const message = error instanceof Error ? error.message : String(error);
    logger.error({ jobId: this.jobId, err: error, attempt }, "attempt ended unexpectedly");
    if (attempt >= maxAttempts) {
      await this.finishFailed({ code: "max_attempts_exceeded", message: `gave up after ${attempt} attempt(s): ${message}` });
      return { kind: "final", status: "failed" };
    }
    await this.deps.prisma.job.updateMany({
      where: { id: this.jobId, status: { in: ["running", "cancelling"] } },
      data: { status: "queued", workerId: null, error: { code: "attempt_failed", message } },
    });
    await this.event("warn", "retrying", `attempt ${attempt} failed (${message}); it will be retried`, { attempt });
    return { kind: "requeue", delayMs: RETRY_BACKOFF_MS * attempt };
  }

  /** True when the job was cancelled or deleted under this run. */
  private async cancelRequested(): Promise<boolean> {
    const row = await this.deps.prisma.job.findUnique({ where: { id: this.jobId }, select: { status: true, cancelRequestedAt: true } });
    return !row || row.status === "cancelling" || row.cancelRequestedAt !== null;
  }

  private async watchForCancel(): Promise<void> {
    try {
      if (await this.cancelRequested()) this.stop("cancel");
    } catch (error) {
      this.deps.logger.warn({ jobId: this.jobId, err: error }, "could not look for a cancel request");
    }
  }

  private newestCheckpointRows() {
    return this.deps.prisma.checkpoint.findMany({ where: { jobId: this.jobId }, orderBy: { step: "desc" } });
  }

  private async newestCheckpoint(): Promise<{ step: number; dir: string } | undefined> {
    for (const row of await this.newestCheckpointRows()) {
      if (await this.deps.store.exists(row.storageKey)) return { step: row.step, dir: this.deps.store.pathOf(row.storageKey) };
    }
    return undefined;
  }

  // ---- reports from the sandbox -------------------------------------------------------

  private enqueueWrite(write: () => Promise<unknown>): void {
    this.writes = this.writes
      .then(write)
      .then(
        () => undefined,
        (error) => this.deps.logger.warn({ jobId: this.jobId, err: error }, "could not record training progress"),
      );
  }

  private onStep(report: StepReport): void {
    this.pendingStep = report;
    if (Date.now() - this.lastStepReportAt >= STEP_REPORT_INTERVAL_MS) this.flushStep();
  }

  private flushStep(): void {
    const report = this.pendingStep;
    if (!report) return;
    this.pendingStep = undefined;
    this.lastStepReportAt = Date.now();
    const progress = {
      step: report.step,
      totalSteps: report.totalSteps,
      percent: report.totalSteps > 0 ? Math.round((1000 * report.step) / report.totalSteps) / 10 : 0,
      epoch: report.epoch,
      loss: report.loss,
      learningRate: report.learningRate,
      tokens: report.tokensSeen,
      tokensPerSecond: Math.round(report.tokensPerSecond),
      elapsedMs: Math.round(report.elapsedMs),
      etaMs: Math.round(report.etaMs),
    };
    this.enqueueWrite(async () => {
      await this.deps.prisma.$transaction([
        this.deps.prisma.job.update({ where: { id: this.jobId }, data: { progress } }),
        this.eventQuery("info", "step", `step ${report.step}/${report.totalSteps} loss ${report.loss.toFixed(4)}`, progress),
      ]);
      // Redis may be gone (the reconciler brings the job back): Postgres already has it.
      await this.queueJob.updateProgress(progress).catch(() => {});
    });
  }

  private onEvaluation(report: EvaluationReport): void {
    const summary = Object.entries(report.metrics)
      .filter(([name]) => !name.includes("/"))
      .map(([name, value]) => `${name} ${value.toFixed(4)} (base ${report.baseline[name]?.toFixed(4) ?? "n/a"})`)
      .join(", ");
    this.enqueueWrite(() =>
      this.deps.prisma.$transaction([
        this.deps.prisma.job.update({ where: { id: this.jobId }, data: { metrics: report.metrics } }),
        this.eventQuery("info", "evaluation", `step ${report.step}: ${summary}`, {
          step: report.step,
          metrics: report.metrics,
          baseline: report.baseline,
        }),
      ]),
    );
  }

  private async onCheckpoint(checkpoint: { step: number; dir: string }): Promise<void> {
    const storageKey = path.relative(this.deps.store.root, checkpoint.dir).split(path.sep).join("/");
    const sizeBytes = BigInt(await folderSize(checkpoint.dir));
    await this.deps.prisma.checkpoint.upsert({
      where: { jobId_step: { jobId: this.jobId, step: checkpoint.step } },
      create: { jobId: this.jobId, step: checkpoint.step, storageKey, sizeBytes },
      update: { storageKey, sizeBytes },
    });
    this.enqueueWrite(() => this.eventQuery("info", "checkpoint", `checkpoint saved at step ${checkpoint.step}`, { step: checkpoint.step }));
  }

  // ---- how a run ends -------------------------------------------------------------------

  private eventQuery(level: "debug" | "info" | "warn" | "error", type: string, message: string, data?: object) {
    return this.deps.prisma.jobEvent.create({
      data: { jobId: this.jobId, level, type, message, data: data as Prisma.InputJsonValue | undefined },
    });
  }

  private async event(level: "debug" | "info" | "warn" | "error", type: string, message: string, data?: object): Promise<void> {
    await this.eventQuery(level, type, message, data);
  }

  /** Returns false when the job was cancelled meanwhile, leaving nothing behind. */
  private async finishSucceeded(result: TrainResult, outDir: string): Promise<boolean> {
    const { prisma, store, settings } = this.deps;
    const adapterId = randomUUID();
    const storageKey = `adapters/${adapterId}`;
    const peftConfig = JSON.parse(await fs.readFile(path.join(outDir, "adapter_config.json"), "utf8")) as {
      r: number;
      lora_alpha: number;
      target_modules: string[];
    };
    await store.commit(outDir, storageKey);
    let committed = false;
    try {
      const packed = await packAdapterFolder(store, storageKey);
      committed = await prisma.$transaction(async (tx) => {
        const job = await tx.job.findUniqueOrThrow({ where: { id: this.jobId } });
        const finished = await tx.job.updateMany({
          where: { id: this.jobId, status: "running", workerId: settings.workerId, cancelRequestedAt: null },
          data: {
            status: "succeeded",
            finishedAt: new Date(),
            metrics: result.metrics,
            workerId: null,
            progress: { ...(job.progress as object), step: result.step, percent: 100 },
          },
        });
        if (finished.count === 0) return false;
        await tx.adapter.create({
          data: {
            id: adapterId,
            tenantId: job.tenantId,
            jobId: job.id,
            baseModelId: job.baseModelId,
            task: job.task,
            rank: peftConfig.r,
            alpha: peftConfig.lora_alpha,
            targetModules: peftConfig.target_modules,
            files: packed.files as unknown as Prisma.InputJsonValue,
            sizeBytes: BigInt(packed.sizeBytes),
            sha256: packed.sha256,
            storageKey,
            metrics: { metrics: result.metrics, baseline: result.baseline, step: result.step },
          },
        });
        await tx.evaluation.createMany({
          data: Object.entries(result.metrics).map(([metric, value]) => ({
            jobId: job.id,
            adapterId,
            split: "validation",
            metric,
            value,
            baselineValue: result.baseline[metric] ?? null,
            step: result.step,
          })),
        });
        await tx.jobEvent.create({
          data: {
            jobId: job.id,
            type: "succeeded",
            message: `succeeded at step ${result.step}`,
            data: { adapterId, step: result.step, metrics: result.metrics, baseline: result.baseline },
          },
        });
        return true;
      });
    } finally {
      if (!committed) {
        await store.remove(storageKey);
        await store.remove(`${storageKey}.tar.gz`);
      }
    }
    return committed;
  }

  private async removePartialArtifacts(): Promise<void> {
    await this.deps.prisma.checkpoint.deleteMany({ where: { jobId: this.jobId } });
    await this.deps.store.remove(`jobs/${this.jobId}`);
  }

  private async finishCancelled(message: string): Promise<void> {
    await this.removePartialArtifacts();
    await this.deps.prisma.$transaction([
      this.deps.prisma.job.updateMany({
        where: { id: this.jobId, status: { notIn: [...FINISHED_STATUSES] } },
        data: { status: "cancelled", finishedAt: new Date(), workerId: null },
      }),
      this.eventQuery("info", "cancelled", message),
    ]);
    this.deps.logger.info({ jobId: this.jobId }, message);
  }

  private async finishFailed(error: JobError): Promise<void> {
    await this.removePartialArtifacts();
    await this.deps.prisma.$transaction([
      this.deps.prisma.job.updateMany({
        where: { id: this.jobId, status: { notIn: [...FINISHED_STATUSES] } },
        data: { status: "failed", finishedAt: new Date(), workerId: null, error: { ...error } },
      }),
      this.eventQuery("error", "failed", error.message, { code: error.code }),
    ]);
    this.deps.logger.warn({ jobId: this.jobId, error }, "job failed");
  }

  /** A deploy stops this worker: the attempt does not count, and another worker resumes. */
  private async handBack(step: number | undefined): Promise<void> {
    const { prisma } = this.deps;
    await prisma.$transaction([
      prisma.job.updateMany({
        where: { id: this.jobId, status: "running", attempts: { gt: 0 } },
        data: { status: "queued", workerId: null, attempts: { decrement: 1 } },
      }),
      this.eventQuery("info", "requeued", step === undefined ? "worker stopping; job handed back" : `worker stopping; job handed back at step ${step}`, {
        step: step ?? null,
      }),
    ]);
    this.deps.logger.info({ jobId: this.jobId, step }, "job handed back");
  }
}

function timeoutError(timeoutMs: number): JobError {
  return { code: "job_timeout", message: `the job ran longer than the maximum of ${timeoutMs} ms (JOB_TIMEOUT_MS)` };
}

async function folderSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    total += entry.isDirectory() ? await folderSize(full) : (await fs.stat(full)).size;
  }
  return total;
}
