// Classification with a trained adapter. Base models stay loaded in this process (the least
// recently used one is dropped beyond PREDICT_MODEL_CACHE_SIZE); adapters of one base are
// swapped on it without reloading it; requests that arrive together for the same adapter
// are answered by one batched forward pass.
import type { FastifyPluginAsync } from "fastify";
import { AppError } from "../../common/errors.ts";
import { AdapterError, ClassifierService, type Prediction } from "../../trainer/index.ts";
import { acquireBaseModel, type AdapterTargets } from "../adapter-targets.ts";
import type { AppDeps } from "../deps.ts";
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

export type PredictRoutesOptions = Pick<AppDeps, "store" | "config"> & { adapterTargets: AdapterTargets };

export const predictRoutes: FastifyPluginAsync<PredictRoutesOptions> = async (app, { store, config, adapterTargets }) => {
  const models = new BaseModelCache(config.predictModelCacheSize, (modelDir) => ClassifierService.load(modelDir, config.trainerBackend).then((service) => new LoadedBase(service, config.predictMaxBatch)));

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
      const target = await adapterTargets.servable(id, tenantOf(request), "classification", "predict");
      const base = await acquireBaseModel(models, target);
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
};
