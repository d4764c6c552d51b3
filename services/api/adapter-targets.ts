// What the serving routes (predict, generate) need of an adapter: its tenant, task, files and
// base model folder, kept in memory because an adapter row never changes once written.
import type { ArtifactStore } from "../common/artifacts.ts";
import type { PrismaClient } from "../common/db.ts";
import { AppError, notFound } from "../common/errors.ts";
import { modelKey } from "../common/models.ts";
import { ModelConfigError } from "../trainer/index.ts";
import type { BaseModelCache, Disposable } from "./model-cache.ts";

export interface AdapterTarget {
  id: string;
  tenantId: string;
  task: string;
  baseModelId: string;
  storageKey: string;
  /** Folder of the base model, or undefined when it is not registered. */
  modelPath: string | undefined;
}

const CAPACITY = 1024;

export class AdapterTargets {
  private readonly known = new Map<string, AdapterTarget>();

  constructor(
    private readonly prisma: PrismaClient,
    private readonly store: ArtifactStore,
  ) {}

  /**
   * The tenant's adapter for `task` with its files and base model in place, or the 4xx that says
   * which is missing. `route` names the serving route in the message.
   */
  async servable(id: string, tenantId: string, task: string, route: string): Promise<AdapterTarget & { modelPath: string }> {
    const target = await this.resolve(id);
    if (!target || target.tenantId !== tenantId) throw notFound("adapter", id);
    if (target.task !== task) throw new AppError(422, "unsupported_task", `adapter ${id} is for ${target.task}; ${route} serves ${task} adapters`);
    if (!(await this.store.exists(target.storageKey))) throw new AppError(404, "not_found", `the files of adapter ${id} are gone`);
    // The serving routes read the folder locally: with the s3 store, fetch its copy once.
    await this.store.fetch(target.storageKey);
    if (!target.modelPath) throw new AppError(422, "base_model_unusable", `base model ${target.baseModelId} of adapter ${id} is not registered`);
    // With the s3 store the base model is a folder in the bucket too: this API keeps a copy of each it serves.
    if (this.store.kind === "s3") return { ...target, modelPath: await this.store.fetch(modelKey(target.baseModelId)) };
    return { ...target, modelPath: target.modelPath };
  }

  private async resolve(id: string): Promise<AdapterTarget | undefined> {
    const cached = this.known.get(id);
    if (cached) return cached;
    const adapter = await this.prisma.adapter.findUnique({ where: { id } });
    if (!adapter) return undefined;
    const baseModel = await this.prisma.baseModel.findUnique({ where: { id: adapter.baseModelId } });
    const target = { id, tenantId: adapter.tenantId, task: adapter.task, baseModelId: adapter.baseModelId, storageKey: adapter.storageKey, modelPath: baseModel?.path };
    // An unregistered base model may be registered later: only complete answers are kept.
    if (baseModel) {
      if (this.known.size >= CAPACITY) this.known.delete(this.known.keys().next().value!);
      this.known.set(id, target);
    }
    return target;
  }
}

/** The loaded base model of a servable adapter; a folder the engine cannot use is a 422. Release it after use. */
export function acquireBaseModel<T extends Disposable>(models: BaseModelCache<T>, target: AdapterTarget & { modelPath: string }): Promise<T> {
  return models.acquire(target.baseModelId, target.modelPath).catch((error: unknown) => {
    if (error instanceof ModelConfigError) throw new AppError(422, "base_model_unusable", error.message);
    throw error;
  });
}
