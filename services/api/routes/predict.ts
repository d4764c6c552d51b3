// Classification with a trained adapter. Base models stay loaded in this process (the least
// recently used one is dropped beyond PREDICT_MODEL_CACHE_SIZE); adapters of one base are
// swapped on it without reloading it; requests that arrive together for the same adapter
// are answered by one batched forward pass.
import type { FastifyInstance } from "fastify";
import type { PrismaClient } from "../../common/db.ts";
import { AppError, notFound } from "../../common/errors.ts";
import { AdapterError, ClassifierService, ModelConfigError, type Prediction } from "../../trainer/index.ts";
import type { AppDeps } from "../app.ts";
import { BaseModelCache } from "../model-cache.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";

const MAX_INPUT_CHARS = 10_000;

interface PendingRequest {
  texts: string[];
  resolve(predictions: Prediction[]): void;
  reject(error: unknown): void;
}

/** One loaded base model and the requests waiting for it, grouped by adapter folder. */
class LoadedBase {
  private readonly pending = new Map<string, PendingRequest[]>();
  private flushing = false;

  constructor(
    readonly service: ClassifierService,
    private readonly maxBatch: number,
  ) {}

  predict(texts: string[], adapterDir: string): Promise<Prediction[]> {
    return new Promise((resolve, reject) => {
      const queue = this.pending.get(adapterDir) ?? [];
      queue.push({ texts, resolve, reject });
      this.pending.set(adapterDir, queue);
      if (!this.flushing) {
        this.flushing = true;
        // Requests that arrive in the same turn of the event loop join this batch.
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    for (const [adapterDir, queue] of this.pending) {
      while (queue.length > 0) {
        const batch: PendingRequest[] = [];
        let size = 0;
        while (queue.length > 0 && (batch.length === 0 || size + queue[0].texts.length <= this.maxBatch)) {
          const next = queue.shift()!;
          batch.push(next);
          size += next.texts.length;
        }
        try {
          const predictions = await this.service.predict(
            batch.flatMap((request) => request.texts),
            adapterDir,
          );
          let offset = 0;
          for (const request of batch) {
            request.resolve(predictions.slice(offset, offset + request.texts.length));
            offset += request.texts.length;
          }
        } catch (error) {
          for (const request of batch) request.reject(error);
        }
      }
      this.pending.delete(adapterDir);
    }
    this.flushing = false;
    if (this.pending.size > 0) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  dispose(): void {
    this.service.dispose();
  }
}

interface AdapterTarget {
  tenantId: string;
  task: string;
  baseModelId: string;
  storageKey: string;
  /** Folder of the base model, or undefined when it is not registered. */
  modelPath: string | undefined;
}

/** An adapter row never changes once written, so what predict needs of it is kept in memory. */
class AdapterTargets {
  private static readonly CAPACITY = 1024;
  private readonly known = new Map<string, AdapterTarget>();

  constructor(private readonly prisma: PrismaClient) {}

  async resolve(id: string): Promise<AdapterTarget | undefined> {
    const cached = this.known.get(id);
    if (cached) return cached;
    const adapter = await this.prisma.adapter.findUnique({ where: { id } });
    if (!adapter) return undefined;
    const baseModel = await this.prisma.baseModel.findUnique({ where: { id: adapter.baseModelId } });
    const target = { tenantId: adapter.tenantId, task: adapter.task, baseModelId: adapter.baseModelId, storageKey: adapter.storageKey, modelPath: baseModel?.path };
    // An unregistered base model may be registered later: only complete answers are kept.
    if (baseModel) {
      if (this.known.size >= AdapterTargets.CAPACITY) this.known.delete(this.known.keys().next().value!);
      this.known.set(id, target);
    }
    return target;
  }
}

const predictBody = {
  type: "object",
  required: ["inputs"],
  additionalProperties: false,
  properties: {
    inputs: { type: "array", minItems: 1, items: { type: "string", minLength: 1, maxLength: MAX_INPUT_CHARS } },
  },
} as const;

const predictResponse = {
  type: "object",
  properties: {
    adapterId: { type: "string" },
    baseModelId: { type: "string" },
    predictions: {
      type: "array",
      items: {
        type: "object",
        properties: {
          label: { type: "string" },
          score: { type: "number" },
          scores: { type: "object", additionalProperties: { type: "number" } },
        },
      },
    },
  },
} as const;

export async function predictRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const { prisma, store, config } = deps;
  const models = new BaseModelCache(config.predictModelCacheSize, (modelDir) => ClassifierService.load(modelDir).then((service) => new LoadedBase(service, config.predictMaxBatch)));
  const targets = new AdapterTargets(prisma);

  app.post(
    "/v1/adapters/:id/predict",
    {
      schema: {
        tags: ["adapters"],
        summary: "Classify texts with a classification adapter: label, score and every class's score per input",
        params: uuidParams,
        body: predictBody,
        response: { 200: predictResponse, ...errorResponses(400, 401, 404, 413, 422, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const { inputs } = request.body as { inputs: string[] };
      if (inputs.length > config.predictMaxBatch) {
        throw new AppError(413, "too_many_inputs", `at most ${config.predictMaxBatch} inputs per request (PREDICT_MAX_BATCH), got ${inputs.length}`);
      }
      const target = await targets.resolve(id);
      if (!target || target.tenantId !== tenantOf(request)) throw notFound("adapter", id);
      if (target.task !== "classification") {
        throw new AppError(422, "unsupported_task", `adapter ${id} is for ${target.task}; predict serves classification adapters`);
      }
      if (!(await store.exists(target.storageKey))) throw new AppError(404, "not_found", `the files of adapter ${id} are gone`);
      if (!target.modelPath) throw new AppError(422, "base_model_unusable", `base model ${target.baseModelId} of adapter ${id} is not registered`);
      const base = await models.acquire(target.baseModelId, target.modelPath).catch((error: unknown) => {
        if (error instanceof ModelConfigError) throw new AppError(422, "base_model_unusable", error.message);
        throw error;
      });
      try {
        const predictions = await base.predict(inputs, store.pathOf(target.storageKey));
        return {
          adapterId: id,
          baseModelId: target.baseModelId,
          predictions: predictions.map(({ label, score, scores }) => ({ label, score, scores })),
        };
      } catch (error) {
        if (error instanceof AdapterError) throw new AppError(422, "adapter_unusable", error.message);
        throw error;
      } finally {
        models.release(target.baseModelId);
      }
    },
  );
}
