// Base models: whatever Hugging Face folders MODELS_DIR holds right now, each with its planned training
// memory per weight storage mode.
import type { FastifyPluginAsync } from "fastify";
import { notFound } from "../../common/errors.ts";
import type { BaseModelInfo, ModelRegistry } from "../../common/models.ts";
import { DEFAULT_TARGET_MODULES } from "../../trainer/index.ts";
import { errorResponses } from "../schemas.ts";
import { modelMemoryEstimates } from "../estimate.ts";

const modelView = (model: BaseModelInfo) => {
  const { path: _path, ...visible } = model;
  return { ...visible, defaultTargetModules: DEFAULT_TARGET_MODULES[model.modelType] ?? [], memory: modelMemoryEstimates(model) };
};

export interface ModelRoutesOptions {
  models: ModelRegistry;
}

export const modelRoutes: FastifyPluginAsync<ModelRoutesOptions> = async (app, deps) => {
  app.get(
    "/v1/models",
    {
      schema: {
        tags: ["models"],
        summary: "Base models found in MODELS_DIR",
        response: { 200: { type: "object", required: ["data"], properties: { data: { type: "array", items: { $ref: "BaseModel#" } } } }, ...errorResponses(401, 429) },
      },
    },
    async () => ({ data: (await deps.models.list()).map(modelView) }),
  );

  app.get(
    "/v1/models/:id",
    {
      schema: {
        tags: ["models"],
        summary: "One base model",
        params: { type: "object", required: ["id"], additionalProperties: false, properties: { id: { type: "string", maxLength: 128 } } },
        response: { 200: { $ref: "BaseModel#" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const model = await deps.models.get(id);
      if (!model) throw notFound("model", id);
      return modelView(model);
    },
  );
};
