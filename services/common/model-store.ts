// Base models in the artifact store, so that with ARTIFACT_STORE=s3 no machine needs a shared
// MODELS_DIR: an operator uploads a model folder once (`npm run models -- upload DIR`), the API's
// registry lists `models/<id>/` folders from the bucket, and each worker downloads a model into
// its size-bounded local cache before a run. With the fs store MODELS_DIR is read in place.
import fs from "node:fs/promises";
import path from "node:path";
import type { ArtifactStore } from "./artifacts.ts";
import type { Config } from "./config.ts";
import { isModelId, modelInfo, modelKey, readModelFolder, scanModelsDir, type BaseModelInfo, type ModelSource } from "./models.ts";
import { S3ArtifactStore } from "./s3-artifacts.ts";

async function readText(store: ArtifactStore, key: string): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of store.read(key)) chunks.push(chunk as Buffer);
  } catch {
    return undefined;
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Models in the bucket: one listing, then each model's config.json. `path` is where a local copy would be. */
async function scanStore(store: S3ArtifactStore): Promise<BaseModelInfo[]> {
  const ids = (await store.listFolders("models/")).filter(isModelId);
  const models = await Promise.all(
    ids.map(async (id) => {
      const text = await readText(store, `${modelKey(id)}/config.json`);
      return text === undefined ? undefined : modelInfo(id, store.pathOf(modelKey(id)), text);
    }),
  );
  return models.filter((model): model is BaseModelInfo => model !== undefined);
}

/** Where the registry finds base models: the bucket (s3) or MODELS_DIR (fs). */
export function modelSource(config: Config, store: ArtifactStore): ModelSource {
  if (store instanceof S3ArtifactStore) return () => scanStore(store);
  return () => scanModelsDir(config.modelsDir);
}

/**
 * Puts a Hugging Face folder where the registry finds it, as model `id` (default: the folder's
 * name): uploaded to `models/<id>/` (s3, visible once whole), or copied into MODELS_DIR (fs).
 * A model id names fixed contents: workers keep cached copies, so upload changes under a new id.
 */
export async function uploadModel(config: Config, store: ArtifactStore, folder: string, id = path.basename(path.resolve(folder))): Promise<BaseModelInfo> {
  if (!isModelId(id)) throw new Error(`invalid model id ${JSON.stringify(id)}: letters, digits, . _ - (no separators)`);
  const info = await readModelFolder(folder, id);
  if (!info) throw new Error(`${folder} has no readable config.json: not a Hugging Face model folder`);
  if (store instanceof S3ArtifactStore) {
    await store.publishFrom(path.resolve(folder), modelKey(id));
    return { ...info, path: store.pathOf(modelKey(id)) };
  }
  const target = path.join(config.modelsDir, id);
  await fs.cp(folder, target, { recursive: true });
  return { ...info, path: target };
}

/** The models the configured store holds, for the CLI's listing. */
export function listModels(config: Config, store: ArtifactStore): Promise<BaseModelInfo[]> {
  return modelSource(config, store)();
}
