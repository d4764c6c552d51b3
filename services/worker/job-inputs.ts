// What a run of a job reads, as local folders: the base model, datasets (held in the worker's cache),
// the newest recorded checkpoint before a resume, another job's checkpoint or adapter it starts from,
// a composition's source adapters with their training data; and, after the run, dropping those copies.
import fs from "node:fs/promises";
import path from "node:path";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Prisma, PrismaClient } from "../common/db.ts";
import { modelKey } from "../common/models.ts";
import type { CompositionRequest, CompositionSource, CompositionType, HyperparameterOptions, LoraOptions } from "../trainer/index.ts";
import type { CachedCopy, LocalCache } from "./local-cache.ts";

/** Job.composition of a composition job (POST /v1/adapters/compose). */
export interface StoredComposition {
  type: CompositionType;
  weights: number[];
  svdRank?: number | null;
  adapterIds: string[];
}

export const checkpointRoot = (jobId: string) => `jobs/${jobId}/checkpoints`;
export const jobFolder = (jobId: string) => `jobs/${jobId}`;

export const JOB_INPUTS = { baseModel: true, trainDataset: true, validationDataset: true } as const;
export type JobWithInputs = Prisma.JobGetPayload<{ include: typeof JOB_INPUTS }>;

/** The local copies one run of a job reads, and their release. */
export class JobInputs {
  /** Local dataset and model copies this run holds in the worker's cache. */
  private readonly held: CachedCopy[] = [];
  /** Local copies of another job's checkpoint or an adapter this run started from. */
  private readonly sourceCopies: string[] = [];

  constructor(
    protected readonly prisma: PrismaClient,
    protected readonly store: ArtifactStore,
    readonly jobId: string,
    private readonly cache?: LocalCache,
  ) {}

  /** The newest checkpoint whose files exist, fetched; with early stopping also the best one, whose weights the adapter takes (with s3 it may be only in the bucket). */
  async newestCheckpoint(): Promise<{ step: number; dir: string } | undefined> {
    const rows = await this.prisma.checkpoint.findMany({ where: { jobId: this.jobId }, orderBy: { step: "desc" } });
    for (const row of rows) {
      if (!(await this.store.exists(row.storageKey))) continue;
      const newest = { step: row.step, dir: await this.store.fetch(row.storageKey) };
      const bestStep = await bestStepOf(newest.dir);
      const best = rows.find((other) => other.step === bestStep && other.step !== row.step);
      if (best && (await this.store.exists(best.storageKey))) await this.store.fetch(best.storageKey);
      return newest;
    }
    return undefined;
  }

  /** Another job's checkpoint this job starts from (POST /v1/jobs fromCheckpoint), fetched; undefined once it is gone. */
  async sourceCheckpoint(jobId: string, step: number): Promise<{ step: number; dir: string } | undefined> {
    const row = await this.prisma.checkpoint.findUnique({ where: { jobId_step: { jobId, step } } });
    if (!row || !(await this.store.exists(row.storageKey))) return undefined;
    return { step: row.step, dir: await this.fetchSource(row.storageKey) };
  }

  /** The folder of the adapter this job starts from (POST /v1/jobs fromAdapter), fetched; undefined once it is gone. */
  async sourceAdapter(adapterId: string): Promise<string | undefined> {
    const row = await this.prisma.adapter.findUnique({ where: { id: adapterId }, select: { storageKey: true } });
    if (!row || !(await this.store.exists(row.storageKey))) return undefined;
    return this.fetchSource(row.storageKey);
  }

  /** A local copy of a source; dropped after the run unless it was here already (the source job may be running on this worker). */
  private async fetchSource(key: string): Promise<string> {
    const wasLocal = await fs.access(this.store.pathOf(key)).then(() => true, () => false);
    const dir = await this.store.fetch(key);
    if (!wasLocal && this.store.kind !== "fs") this.sourceCopies.push(key);
    return dir;
  }

  /**
   * The base model's local folder: MODELS_DIR as registered (fs), or with the s3 store its
   * `models/<id>` folder, downloaded into and held in the worker's cache until `removeLocalCopies`.
   */
  async modelPath(job: JobWithInputs): Promise<string> {
    if (this.store.kind === "fs") return job.baseModel.path;
    return this.datasetPath(modelKey(job.baseModelId));
  }

  /** A local copy of the dataset (or model), held in the worker's cache until `removeLocalCopies`. */
  async datasetPath(storageKey: string): Promise<string> {
    if (!this.cache) return this.store.fetch(storageKey);
    const copy = await this.cache.acquire(storageKey);
    this.held.push(copy);
    return copy.path;
  }

  /**
   * A composition job's sources: each adapter's local folder and the data and settings of the job
   * that trained it (its validation set is rebuilt from them), held like the job's own inputs.
   */
  async compositionSources(composition: StoredComposition): Promise<CompositionRequest> {
    const adapters = await this.prisma.adapter.findMany({ where: { id: { in: composition.adapterIds } }, include: { job: { include: JOB_INPUTS } } });
    const sources: CompositionSource[] = [];
    for (const id of composition.adapterIds) {
      const adapter = adapters.find((row) => row.id === id);
      if (!adapter) throw new Error(`source adapter ${id} is gone`);
      const { job } = adapter;
      sources.push({
        adapterDir: await this.store.fetch(adapter.storageKey),
        name: adapter.id,
        trainFile: await this.datasetPath(job.trainDataset.storageKey),
        validationFile: job.validationDataset ? await this.datasetPath(job.validationDataset.storageKey) : undefined,
        validationSplit: job.validationSplit ?? undefined,
        lora: job.loraConfig as unknown as LoraOptions,
        hyper: job.hyperparameters as unknown as HyperparameterOptions,
      });
    }
    return { type: composition.type, weights: composition.weights, ...(composition.svdRank ? { svdRank: composition.svdRank } : {}), sources };
  }

  checkpointDir(): string {
    return this.store.pathOf(checkpointRoot(this.jobId));
  }

  scratchFolder(): Promise<string> {
    return this.store.scratchPath(`adapter-${this.jobId}`);
  }

  /** After a run: its scratch folder, its local checkpoint copies (when the store keeps them elsewhere), its hold on cached datasets. */
  async removeLocalCopies(scratch: string): Promise<void> {
    await fs.rm(scratch, { recursive: true, force: true });
    await this.store.dropLocal(jobFolder(this.jobId));
    for (const key of this.sourceCopies.splice(0)) await this.store.dropLocal(key);
    for (const copy of this.held.splice(0)) copy.release();
  }
}

/** Early stopping's best step as a checkpoint's trainer state records it, if it does. */
async function bestStepOf(checkpointDir: string): Promise<number | undefined> {
  const state = JSON.parse(await fs.readFile(path.join(checkpointDir, "trainer_state.json"), "utf8").catch(() => "{}")) as { earlyStopping?: { bestStep?: number } };
  return state.earlyStopping?.bestStep;
}
