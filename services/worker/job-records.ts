// Where a job's state and artifacts are written: the Postgres rows of a run (claim, events,
// progress, checkpoints, the terminal outcome) and the storage layout in the artifact store;
// what a run reads (model, datasets, checkpoints, sources) is job-inputs.ts's.
// The engine only sees local folders: a checkpoint is published to the store before its row is
// written, and the adapter is committed from its local folder. Every terminal write is one
// transaction and safe to repeat, so a write retried after a dropped connection never applies twice.
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { archiveKeyOf, packAdapterFolder, type PackedAdapter } from "../common/adapter-archive.ts";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Prisma, PrismaClient } from "../common/db.ts";
import type { JobProgress } from "../common/job-progress.ts";
import { FINISHED_STATUSES } from "../common/job-status.ts";
import { safetensorsElementCount, type EvaluationReport, type TrainResult } from "../trainer/index.ts";
import { JOB_INPUTS, jobFolder, JobInputs, type JobWithInputs } from "./job-inputs.ts";
import type { LocalCache } from "./local-cache.ts";


export type EventLevel = "debug" | "info" | "warn" | "error";

export interface JobError {
  code: string;
  message: string;
}

/** A finished adapter folder moved into the store and packed, not yet visible to anyone. */
export interface StoredAdapter {
  adapterId: string;
  storageKey: string;
  packed: PackedAdapter;
  peftConfig: { r: number; lora_alpha: number; target_modules: string[] };
  /** Every number in adapter_model.safetensors: what a sweep's table reports as trainable parameters. */
  trainableParameters: number;
}

const adapterKey = (adapterId: string) => `adapters/${adapterId}`;

/** The Postgres rows and stored files of one job, as one run of it sees them; its local inputs are JobInputs'. */
export class JobRecords extends JobInputs {
  constructor(
    prisma: PrismaClient,
    store: ArtifactStore,
    jobId: string,
    private readonly workerId: string,
    cache?: LocalCache,
  ) {
    super(prisma, store, jobId, cache);
  }

  async load(): Promise<JobWithInputs | null> {
    return this.prisma.job.findUnique({ where: { id: this.jobId }, include: JOB_INPUTS });
  }

  /** Marks the job running under this worker; false if it is no longer queued or running. */
  async claim(attempt: number, startedAt: Date): Promise<boolean> {
    const claimed = await this.prisma.job.updateMany({
      where: { id: this.jobId, status: { in: ["queued", "running"] } },
      data: { status: "running", attempts: attempt, workerId: this.workerId, startedAt },
    });
    return claimed.count > 0;
  }

  /** True when the job was cancelled or deleted under this run. */
  async cancelRequested(): Promise<boolean> {
    return (await this.stopRequested()) === "cancel";
  }

  /** What the API asks of this run, if anything: a cancel (also when the job was deleted) or a pause. */
  async stopRequested(): Promise<"cancel" | "pause" | undefined> {
    const row = await this.prisma.job.findUnique({ where: { id: this.jobId }, select: { status: true, cancelRequestedAt: true, pauseRequestedAt: true } });
    if (!row || row.status === "cancelling" || row.cancelRequestedAt !== null) return "cancel";
    return row.pauseRequestedAt !== null ? "pause" : undefined;
  }

  async event(level: EventLevel, type: string, message: string, data?: object): Promise<void> {
    await this.eventQuery(level, type, message, data);
  }

  async progress(progress: JobProgress, message: string): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.job.update({ where: { id: this.jobId }, data: { progress: { ...progress } } }),
      this.eventQuery("info", "step", message, progress),
    ]);
  }

  async evaluation(report: EvaluationReport, message: string): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.job.update({ where: { id: this.jobId }, data: { metrics: report.metrics } }),
      this.eventQuery("info", "evaluation", message, { step: report.step, metrics: report.metrics, baseline: report.baseline }),
    ]);
  }

  async checkpoint(step: number, dir: string): Promise<void> {
    const storageKey = path.relative(this.store.root, dir).split(path.sep).join("/");
    const sizeBytes = BigInt(await folderSize(dir));
    // In the store before Postgres points at it, so whichever worker resumes finds it whole.
    await this.store.publish(storageKey);
    await this.prisma.$transaction([
      this.prisma.checkpoint.upsert({
        where: { jobId_step: { jobId: this.jobId, step } },
        create: { jobId: this.jobId, step, storageKey, sizeBytes },
        update: { storageKey, sizeBytes },
      }),
      this.eventQuery("info", "checkpoint", `checkpoint saved at step ${step}`, { step }),
    ]);
  }

  /** Moves the engine's adapter folder into the store and packs it; nothing in Postgres points at it yet. */
  async storeAdapter(outDir: string): Promise<StoredAdapter> {
    const adapterId = randomUUID();
    const storageKey = adapterKey(adapterId);
    const peftConfig = JSON.parse(await fs.readFile(path.join(outDir, "adapter_config.json"), "utf8")) as StoredAdapter["peftConfig"];
    const trainableParameters = await safetensorsElementCount(path.join(outDir, "adapter_model.safetensors"));
    await this.store.commit(outDir, storageKey, { keepLocal: true });
    try {
      return { adapterId, storageKey, packed: await packAdapterFolder(this.store, storageKey), peftConfig, trainableParameters };
    } catch (error) {
      await this.discardAdapter({ storageKey });
      throw error;
    } finally {
      await this.store.dropLocal(storageKey);
    }
  }

  async discardAdapter({ storageKey }: Pick<StoredAdapter, "storageKey">): Promise<void> {
    await this.store.remove(storageKey);
    await this.store.remove(archiveKeyOf(storageKey));
  }

  /**
   * Publishes the adapter and marks the job succeeded, in one transaction. False when the job is
   * no longer this worker's running job (cancelled, or taken over). Repeating it after a commit
   * whose answer was lost finds the adapter row and answers true.
   */
  async succeed(stored: StoredAdapter, result: TrainResult): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      if (await tx.adapter.findUnique({ where: { id: stored.adapterId }, select: { id: true } })) return true;
      const job = await tx.job.findUniqueOrThrow({ where: { id: this.jobId } });
      const finished = await tx.job.updateMany({
        where: { id: this.jobId, status: "running", workerId: this.workerId, cancelRequestedAt: null },
        data: {
          status: "succeeded",
          finishedAt: new Date(),
          metrics: finalMetrics(result),
          workerId: null,
          progress: { ...(job.progress as object), step: result.step, percent: 100, adapterStep: result.adapterStep ?? result.step },
        },
      });
      if (finished.count === 0) return false;
      await tx.adapter.create({
        data: {
          id: stored.adapterId,
          tenantId: job.tenantId,
          jobId: job.id,
          baseModelId: job.baseModelId,
          task: job.task,
          rank: stored.peftConfig.r,
          alpha: stored.peftConfig.lora_alpha,
          targetModules: stored.peftConfig.target_modules,
          trainableParameters: stored.trainableParameters,
          files: stored.packed.files as unknown as Prisma.InputJsonValue,
          sizeBytes: BigInt(stored.packed.sizeBytes),
          sha256: stored.packed.sha256,
          storageKey: stored.storageKey,
          metrics: {
            metrics: result.metrics,
            baseline: result.baseline,
            step: result.adapterStep ?? result.step,
            lastStep: result.step,
            stoppedEarlyAt: result.stoppedEarlyAt ?? null,
            ...(result.report ? { report: result.report as unknown as Prisma.InputJsonObject } : {}),
          },
        },
      });
      await tx.evaluation.createMany({
        data: Object.entries(result.metrics).map(([metric, value]) => ({
          jobId: job.id,
          adapterId: stored.adapterId,
          split: "validation",
          metric,
          value,
          baselineValue: result.baseline[metric] ?? null,
          step: result.adapterStep ?? result.step,
        })),
      });
      await tx.jobEvent.create({
        data: {
          jobId: job.id,
          type: "succeeded",
          message:
            `succeeded at step ${result.step}` +
            (result.stoppedEarlyAt !== undefined ? " (stopped early)" : "") +
            (result.adapterStep !== undefined && result.adapterStep !== result.step ? `; the adapter holds the best step, ${result.adapterStep}` : ""),
          data: { adapterId: stored.adapterId, step: result.step, adapterStep: result.adapterStep ?? result.step, stoppedEarlyAt: result.stoppedEarlyAt ?? null, metrics: result.metrics, baseline: result.baseline },
        },
      });
      return true;
    });
  }

  async cancel(message: string): Promise<void> {
    await this.removePartialArtifacts();
    await this.finishUnlessFinished({ status: "cancelled" }, this.eventQuery("info", "cancelled", message));
  }

  async fail(error: JobError): Promise<void> {
    await this.removePartialArtifacts();
    await this.finishUnlessFinished({ status: "failed", error: { ...error } }, this.eventQuery("error", "failed", error.message, { code: error.code }));
  }

  /** The attempt died through no fault of the job: back to queued, to be retried. */
  async requeueFailedAttempt(attempt: number, message: string): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.job.updateMany({
        where: { id: this.jobId, status: { in: ["running", "cancelling"] } },
        data: { status: "queued", workerId: null, error: { code: "attempt_failed", message } },
      }),
      this.eventQuery("warn", "retrying", `attempt ${attempt} failed (${message}); it will be retried`, { attempt }),
    ]);
  }

  /** A deploy stops this worker: the attempt does not count, and another worker resumes. */
  async handBack(step: number | undefined): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.job.updateMany({
        where: { id: this.jobId, status: "running", attempts: { gt: 0 } },
        data: { status: "queued", workerId: null, attempts: { decrement: 1 } },
      }),
      this.eventQuery("info", "requeued", step === undefined ? "worker stopping; job handed back" : `worker stopping; job handed back at step ${step}`, {
        step: step ?? null,
      }),
    ]);
  }

  /**
   * The job paused on request: `paused` until resumed, its checkpoints kept; the attempt does not
   * count. False when the request was withdrawn (resumed) or the job is no longer this run's.
   */
  async pause(step: number | undefined): Promise<boolean> {
    return this.prisma.$transaction(async (tx) => {
      const paused = await tx.job.updateMany({
        where: { id: this.jobId, status: { in: ["queued", "running"] }, pauseRequestedAt: { not: null }, cancelRequestedAt: null },
        data: { status: "paused", workerId: null, pauseRequestedAt: null },
      });
      if (paused.count === 0) return false;
      await tx.job.updateMany({ where: { id: this.jobId, attempts: { gt: 0 } }, data: { attempts: { decrement: 1 } } });
      await tx.jobEvent.create({
        data: { jobId: this.jobId, type: "paused", message: step === undefined ? "paused" : `paused at step ${step}`, data: { step: step ?? null } },
      });
      return true;
    });
  }

  private async removePartialArtifacts(): Promise<void> {
    await this.prisma.checkpoint.deleteMany({ where: { jobId: this.jobId } });
    await this.store.remove(jobFolder(this.jobId));
  }

  private async finishUnlessFinished(data: { status: "cancelled" | "failed"; error?: Prisma.InputJsonValue }, event: Prisma.PrismaPromise<unknown>): Promise<void> {
    await this.prisma.$transaction([
      this.prisma.job.updateMany({
        where: { id: this.jobId, status: { notIn: [...FINISHED_STATUSES] } },
        data: { ...data, finishedAt: new Date(), workerId: null },
      }),
      event,
    ]);
  }

  private eventQuery(level: EventLevel, type: string, message: string, data?: object) {
    return this.prisma.jobEvent.create({
      data: { jobId: this.jobId, level, type, message, data: data as Prisma.InputJsonValue | undefined },
    });
  }
}

/** A finished job's metrics: the adapter's flat numbers, and under `report` the final evaluation's detail, adapter and base. */
function finalMetrics(result: TrainResult): Prisma.InputJsonObject {
  return { ...result.metrics, ...(result.report ? { report: result.report as unknown as Prisma.InputJsonObject } : {}) };
}

async function folderSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    total += entry.isDirectory() ? await folderSize(full) : (await fs.stat(full)).size;
  }
  return total;
}
