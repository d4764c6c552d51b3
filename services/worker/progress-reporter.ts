// Turns the engine's reports into Postgres rows while the job trains, without ever slowing the
// engine down or writing out of order. One write at a time, in the order the reports came:
//   - steps are coalesced (the latest one is written at most once per interval); a step that
//     cannot be written because Postgres is down is dropped, since the next one supersedes it;
//   - evaluations and checkpoints are written late: retried until Postgres answers, in order.
import { isDatabaseUnavailable, type OutageLog } from "../common/db.ts";
import type { JobProgress } from "../common/job-progress.ts";
import type { Logger } from "../common/logger.ts";
import type { EvaluationReport, StepReport } from "../trainer/index.ts";
import type { Durable } from "./durable.ts";
import type { JobRecords } from "./job-records.ts";

export type ProgressRecords = Pick<JobRecords, "progress" | "evaluation" | "checkpoint">;

export function progressOf(report: StepReport): JobProgress {
  return {
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
}

export class ProgressReporter {
  private writes: Promise<void> = Promise.resolve();
  private latestStep: StepReport | undefined;
  private stepWriteQueued = false;
  private lastStepWriteAt = 0;
  private droppedSteps = 0;

  constructor(
    private readonly records: ProgressRecords,
    private readonly durable: Durable,
    private readonly outages: OutageLog,
    private readonly logger: Logger,
    private readonly intervalMs: number,
    /** Also told of every step written, e.g. BullMQ's own progress; its failures are ignored. */
    private readonly alsoReport: (progress: JobProgress) => Promise<unknown>,
    /** Once true, late writes stop waiting for Postgres (the worker is shutting down). */
    private readonly abandon: () => boolean,
  ) {}

  step(report: StepReport): void {
    this.latestStep = report;
    if (Date.now() - this.lastStepWriteAt >= this.intervalMs) this.flushStep();
  }

  evaluation(report: EvaluationReport): void {
    const summary = Object.entries(report.metrics)
      .filter(([name]) => !name.includes("/"))
      .map(([name, value]) => `${name} ${value.toFixed(4)} (base ${report.baseline[name]?.toFixed(4) ?? "n/a"})`)
      .join(", ");
    void this.enqueueLate("evaluation", () => this.records.evaluation(report, `step ${report.step}: ${summary}`));
  }

  /**
   * Records a checkpoint so that a retry can resume from it. Resolves once it is recorded or, if
   * Postgres is down, once it is queued to be recorded late: training does not wait out an outage.
   */
  checkpoint(step: number, dir: string): Promise<void> {
    return new Promise<void>((settled) => {
      void this.enqueueLate("checkpoint", () => this.records.checkpoint(step, dir), settled).then(settled);
    });
  }

  /** Writes the latest step if it was not written yet, then waits for every queued write. */
  async drain(): Promise<void> {
    this.flushStep();
    await this.writes;
  }

  private flushStep(): void {
    this.lastStepWriteAt = Date.now();
    if (this.stepWriteQueued || !this.latestStep) return;
    this.stepWriteQueued = true;
    void this.enqueue("step", async () => {
      this.stepWriteQueued = false;
      const report = this.latestStep;
      this.latestStep = undefined;
      if (!report) return;
      const progress = progressOf(report);
      try {
        await this.records.progress(progress, `step ${report.step}/${report.totalSteps} loss ${report.loss.toFixed(4)}`);
        this.outages.restored();
        if (this.droppedSteps > 0) this.logger.info({ dropped: this.droppedSteps }, "step reports resumed after a database outage; the ones in between were dropped");
        this.droppedSteps = 0;
      } catch (error) {
        if (!isDatabaseUnavailable(error)) throw error;
        this.outages.lost(error);
        this.droppedSteps += 1;
        return;
      }
      // Redis may be gone (the reconciler brings the job back): Postgres already has it.
      await this.alsoReport(progress).catch(() => {});
    });
  }

  /** Queues a write that is retried while Postgres is down; `onOutage` hears the first failure. */
  private enqueueLate(what: string, write: () => Promise<unknown>, onOutage?: () => void): Promise<void> {
    return this.enqueue(what, () =>
      this.durable.write(async () => {
        try {
          await write();
        } catch (error) {
          if (isDatabaseUnavailable(error)) onOutage?.();
          throw error;
        }
      }, this.abandon),
    );
  }

  /** Resolves once the write has been tried; a write that fails for good is logged, never thrown. */
  private enqueue(what: string, write: () => Promise<unknown>): Promise<void> {
    this.writes = this.writes.then(write).then(
      () => undefined,
      (error) => this.logger.warn({ err: error, what }, "could not record training progress"),
    );
    return this.writes;
  }
}
