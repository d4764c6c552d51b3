// Text generation with a causal LM adapter. Base models stay loaded in this process (least recently
// used dropped beyond PREDICT_MODEL_CACHE_SIZE); adapters of one base are swapped on it without
// reloading it.
import type { FastifyPluginAsync } from "fastify";
import { AppError } from "../../common/errors.ts";
import { AdapterError, ChatTemplateError, GenerationError, GeneratorService, type GenerationRequest } from "../../trainer/index.ts";
import { acquireBaseModel, type AdapterTargets } from "../adapter-targets.ts";
import type { AppDeps } from "../deps.ts";
import { BaseModelCache } from "../model-cache.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";

const MAX_INPUT_CHARS = 20_000;
const MAX_NEW_TOKENS = 512;

const message = {
  type: "object",
  required: ["role", "content"],
  additionalProperties: false,
  properties: { role: { type: "string", enum: ["system", "user", "assistant"] }, content: { type: "string", maxLength: MAX_INPUT_CHARS } },
} as const;

const generateBody = {
  type: "object",
  additionalProperties: false,
  description: "exactly one of prompt (plain text to continue) or messages (a chat, formatted with the model's chat template)",
  properties: {
    prompt: { type: "string", minLength: 1, maxLength: MAX_INPUT_CHARS },
    messages: { type: "array", minItems: 1, maxItems: 200, items: message },
    maxNewTokens: { type: "integer", minimum: 1, maximum: MAX_NEW_TOKENS, default: 64 },
    temperature: { type: "number", minimum: 0, maximum: 10, default: 0, description: "0 is greedy decoding" },
    topK: { type: "integer", minimum: 1 },
    topP: { type: "number", exclusiveMinimum: 0, maximum: 1 },
    stop: { type: "array", maxItems: 8, items: { type: "string", minLength: 1, maxLength: 64 } },
    seed: { type: "integer", minimum: 0, maximum: 4294967295, default: 0 },
  },
} as const;

const generateResponse = {
  type: "object",
  properties: {
    adapterId: { type: "string" },
    baseModelId: { type: "string" },
    text: { type: "string" },
    finishReason: { type: "string", enum: ["eos", "stop", "length"] },
    usage: { type: "object", properties: { promptTokens: { type: "integer" }, completionTokens: { type: "integer" } } },
  },
} as const;

interface GenerateBody {
  prompt?: string;
  messages?: GenerationRequest["messages"];
  maxNewTokens: number;
  temperature: number;
  topK?: number;
  topP?: number;
  stop?: string[];
  seed: number;
}

export type GenerateRoutesOptions = Pick<AppDeps, "store" | "config"> & { adapterTargets: AdapterTargets };

export const generateRoutes: FastifyPluginAsync<GenerateRoutesOptions> = async (app, { store, config, adapterTargets }) => {
  const models = new BaseModelCache(config.predictModelCacheSize, (modelDir) => GeneratorService.load(modelDir, config.trainerBackend));

  app.post(
    "/v1/adapters/:id/generate",
    {
      schema: {
        tags: ["adapters"],
        summary: "Generate text with a causal LM adapter from a prompt or a chat",
        params: uuidParams,
        body: generateBody,
        response: { 200: generateResponse, ...errorResponses(400, 401, 404, 422, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const body = request.body as GenerateBody;
      if ((body.prompt === undefined) === (body.messages === undefined)) {
        throw new AppError(400, "validation_failed", "give exactly one of prompt or messages", [{ path: "body", message: "prompt xor messages" }]);
      }
      const target = await adapterTargets.servable(id, tenantOf(request), "causal_lm", "generate");
      const generator = await acquireBaseModel(models, target);
      try {
        const input: GenerationRequest = body.prompt !== undefined ? { prompt: body.prompt } : { messages: body.messages };
        const result = await generator.generate(
          input,
          { maxNewTokens: body.maxNewTokens, temperature: body.temperature, topK: body.topK, topP: body.topP, stop: body.stop, seed: body.seed },
          store.pathOf(target.storageKey),
        );
        return {
          adapterId: id,
          baseModelId: target.baseModelId,
          text: result.text,
          finishReason: result.finishReason,
          usage: { promptTokens: result.promptTokens, completionTokens: result.tokenIds.length },
        };
      } catch (error) {
        if (error instanceof GenerationError) throw new AppError(400, "invalid_generation_request", error.message);
        if (error instanceof ChatTemplateError) throw new AppError(422, "chat_template_failed", error.message);
        if (error instanceof AdapterError) throw new AppError(422, "adapter_unusable", error.message);
        throw error;
      } finally {
        models.release(target.baseModelId);
      }
    },
  );
};
