// Base models are Hugging Face folders (config.json + weights + tokenizer): inside MODELS_DIR
// with the fs artifact store, or folders under `models/<id>` in the bucket with the s3 store
// (model-store.ts). The registry scans its source, keeps BaseModel rows in step with it, and
// answers from memory between scans.
import fs from "node:fs/promises";
import path from "node:path";
import type { PrismaClient } from "./db.ts";
import type { Logger } from "./logger.ts";

export type Task = "classification" | "causal_lm";

export interface BaseModelInfo {
  id: string;
  path: string;
  architecture: string;
  modelType: string;
  tasks: Task[];
  config: Record<string, unknown>;
}

const CLASSIFICATION_MODEL_TYPES = ["bert", "distilbert", "roberta"];
const CAUSAL_LM_MODEL_TYPES = ["gpt2", "llama", "qwen2", "mistral"];

export function tasksOf(architecture: string, modelType: string): Task[] {
  if (architecture.endsWith("ForSequenceClassification")) return ["classification"];
  if (/^(DistilBert|Bert|Roberta)Model$/.test(architecture)) return ["classification"];
  if (["GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"].includes(architecture)) return ["causal_lm"];
  if (CLASSIFICATION_MODEL_TYPES.includes(modelType)) return ["classification"];
  if (CAUSAL_LM_MODEL_TYPES.includes(modelType)) return ["causal_lm"];
  return [];
}

/** A model id is one folder name: no separators, nothing hidden. */
export function isModelId(id: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id);
}

/** Where a base model lives in the artifact store (s3): a folder with its manifest. */
export const modelKey = (id: string) => `models/${id}`;

/** Lists the base models a registry knows (a folder scan, or a bucket listing). */
export type ModelSource = () => Promise<BaseModelInfo[]>;

/** A model described by its config.json text; undefined when that is not a JSON object. */
export function modelInfo(id: string, folder: string, configText: string): BaseModelInfo | undefined {
  let config: Record<string, unknown>;
  try {
    const parsed: unknown = JSON.parse(configText);
    if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
    config = parsed as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const modelType = typeof config.model_type === "string" ? config.model_type : "unknown";
  const architectures = Array.isArray(config.architectures) ? config.architectures.filter((name) => typeof name === "string") : [];
  const architecture = architectures[0] ?? modelType;
  return { id, path: folder, architecture, modelType, tasks: tasksOf(architecture, modelType), config };
}

export async function readModelFolder(folder: string, id: string): Promise<BaseModelInfo | undefined> {
  const text = await fs.readFile(path.join(folder, "config.json"), "utf8").catch(() => undefined);
  return text === undefined ? undefined : modelInfo(id, folder, text);
}

export async function scanModelsDir(modelsDir: string): Promise<BaseModelInfo[]> {
  const entries = await fs.readdir(modelsDir, { withFileTypes: true }).catch(() => []);
  const ids = entries.filter((entry) => (entry.isDirectory() || entry.isSymbolicLink()) && isModelId(entry.name)).map((entry) => entry.name);
  const models = await Promise.all(ids.sort().map((id) => readModelFolder(path.join(modelsDir, id), id)));
  return models.filter((model): model is BaseModelInfo => model !== undefined);
}

export class ModelRegistry {
  private models = new Map<string, BaseModelInfo>();
  private scannedAt = 0;
  private scanning: Promise<void> | undefined;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly source: ModelSource,
    private readonly logger: Logger,
    private readonly rescanAfterMs = 10_000,
  ) {}

  async list(): Promise<BaseModelInfo[]> {
    await this.refresh(this.rescanAfterMs);
    return [...this.models.values()];
  }

  /** A model by id; an unknown id triggers a rescan (at most once a second) before giving up. */
  async get(id: string): Promise<BaseModelInfo | undefined> {
    await this.refresh(this.rescanAfterMs);
    if (!this.models.has(id) && isModelId(id)) await this.refresh(1000);
    return this.models.get(id);
  }

  private async refresh(maxAgeMs: number): Promise<void> {
    if (Date.now() - this.scannedAt < maxAgeMs) return;
    this.scanning ??= this.scan().finally(() => (this.scanning = undefined));
    await this.scanning;
  }

  private async scan(): Promise<void> {
    const found = await this.source();
    const next = new Map(found.map((model) => [model.id, model]));
    for (const model of found) {
      const known = this.models.get(model.id);
      if (known && JSON.stringify(known) === JSON.stringify(model)) continue;
      const row = { path: model.path, architecture: model.architecture, modelType: model.modelType, tasks: model.tasks, config: model.config as object };
      await this.prisma.baseModel.upsert({ where: { id: model.id }, create: { id: model.id, ...row }, update: row });
      this.logger.info({ model: model.id, architecture: model.architecture, tasks: model.tasks }, "base model registered");
    }
    this.models = next;
    this.scannedAt = Date.now();
  }
}
