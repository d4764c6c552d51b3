// Adapters in Hugging Face PEFT's on-disk layout (see shared/PEFT_FORMAT.md), and merging one into
// a full Hugging Face model folder.
import { copyFile, mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { LoraSettings, LoraWeights } from "./lora.ts";
import { headKey, loraKey, loraScale, parsePeftKey } from "./lora.ts";
import { readEncoderConfig, readModelConfigJson, sequenceClassificationClass } from "./hf/config.ts";
import { canonicalName, isHeadParameter, readCheckpoint } from "./model/load.ts";
import { readSafetensors, writeSafetensors, type NamedArray } from "./safetensors.ts";
import { mergeCausalAdapter } from "./causal-merge.ts";
import { causalFamilyOf } from "./hf/causal-config.ts";


export interface Adapter {
  settings: LoraSettings;
  modulesToSave: string[];
  lora: Map<string, LoraWeights>;
  /** Full trained copies of the modules_to_save parameters, by Hugging Face name. */
  head: Map<string, NamedArray>;
  /** Labels by class id. */
  labels: string[];
  baseModelName: string;
  /** PEFT task type; SEQ_CLS when absent. */
  taskType?: "SEQ_CLS" | "CAUSAL_LM";
  /** True for GPT-2's Conv1D layers, whose base weights are stored [in, out]. */
  fanInFanOut?: boolean;
}

export class AdapterError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "AdapterError";
  }
}

/** `load()` once per key: concurrent first uses share it, and a failed load is forgotten so the next use retries. */
export function loadOnce<T>(loads: Map<string, Promise<T>>, key: string, load: () => Promise<T>): Promise<T> {
  let loading = loads.get(key);
  if (!loading) {
    loading = load();
    loads.set(key, loading);
    loading.catch(() => loads.delete(key));
  }
  return loading;
}

/**
 * Throws unless each LoRA pair of the adapter targets a linear layer of the base model, with
 * A as [r, in] and B as [out, r] for that layer. `linearOf` describes the base model's layers.
 */
export function assertAdapterFits(adapter: Adapter, linearOf: (module: string) => { inFeatures: number; outFeatures: number } | undefined): void {
  for (const [module, { a, b }] of adapter.lora) {
    const linear = linearOf(module);
    if (!linear) throw new AdapterError(`adapter targets ${module}, which this base model does not have`);
    if (a.shape[1] !== linear.inFeatures || b.shape[0] !== linear.outFeatures || a.shape[0] !== b.shape[1]) {
      throw new AdapterError(`adapter shapes for ${module} (A ${a.shape.join("×")}, B ${b.shape.join("×")}) do not fit this base model`);
    }
  }
}

export function adapterConfig(adapter: Adapter): Record<string, unknown> {
  return {
    peft_type: "LORA",
    task_type: adapter.taskType ?? "SEQ_CLS",
    auto_mapping: null,
    base_model_name_or_path: adapter.baseModelName,
    revision: null,
    inference_mode: true,
    r: adapter.settings.r,
    lora_alpha: adapter.settings.alpha,
    lora_dropout: adapter.settings.dropout,
    target_modules: adapter.settings.targetModules,
    fan_in_fan_out: adapter.fanInFanOut ?? false,
    bias: "none",
    use_rslora: adapter.settings.useRslora,
    use_dora: false,
    modules_to_save: adapter.modulesToSave.length ? adapter.modulesToSave : null,
    init_lora_weights: true,
    layers_to_transform: null,
    layers_pattern: null,
    rank_pattern: {},
    alpha_pattern: {},
  };
}

export function adapterTensors(adapter: Adapter): Map<string, NamedArray> {
  const tensors = new Map<string, NamedArray>();
  for (const [module, { a, b }] of adapter.lora) {
    tensors.set(loraKey(module, "A"), a);
    tensors.set(loraKey(module, "B"), b);
  }
  for (const [name, value] of adapter.head) tensors.set(headKey(name), value);
  return tensors;
}

/** Writes into a temporary sibling folder, then renames it into place, so readers never see half a folder. */
export async function writeFolderAtomically(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(tmp, { recursive: true });
  try {
    await write(tmp);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
}

export async function writeAdapterFiles(dir: string, adapter: Adapter, metrics: Record<string, unknown>): Promise<void> {
  await writeFile(path.join(dir, "adapter_config.json"), JSON.stringify(adapterConfig(adapter), null, 2) + "\n");
  await writeSafetensors(path.join(dir, "adapter_model.safetensors"), adapterTensors(adapter));
  await writeFile(path.join(dir, "metrics.json"), JSON.stringify({ labels: adapter.labels, ...metrics }, null, 2) + "\n");
}

export async function saveAdapter(dir: string, adapter: Adapter, metrics: Record<string, unknown>): Promise<void> {
  await writeFolderAtomically(dir, (tmp) => writeAdapterFiles(tmp, adapter, metrics));
}

/** Splits PEFT-keyed tensors into LoRA pairs and head parameters. */
export function splitAdapterTensors(tensors: Map<string, NamedArray>): { lora: Map<string, LoraWeights>; head: Map<string, NamedArray> } {
  const lora = new Map<string, Partial<LoraWeights>>();
  const head = new Map<string, NamedArray>();
  for (const [key, value] of tensors) {
    const parsed = parsePeftKey(key);
    if (parsed.kind === "head") {
      head.set(parsed.parameter, value);
      continue;
    }
    const entry = lora.get(parsed.module) ?? {};
    entry[parsed.matrix === "A" ? "a" : "b"] = value;
    lora.set(parsed.module, entry);
  }
  for (const [module, entry] of lora) if (!entry.a || !entry.b) throw new AdapterError(`adapter lacks lora_A or lora_B for ${module}`);
  return { lora: lora as Map<string, LoraWeights>, head };
}

export async function loadAdapter(dir: string): Promise<Adapter> {
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(await readFile(path.join(dir, "adapter_config.json"), "utf8")) as Record<string, unknown>;
  } catch {
    throw new AdapterError(`no readable adapter_config.json in ${dir}`);
  }
  if (config.peft_type !== "LORA") throw new AdapterError(`adapter peft_type ${String(config.peft_type)} is not LORA`);
  const { lora, head } = splitAdapterTensors(await readSafetensors(path.join(dir, "adapter_model.safetensors")));
  let labels: string[] = [];
  try {
    const metrics = JSON.parse(await readFile(path.join(dir, "metrics.json"), "utf8")) as { labels?: string[] };
    labels = metrics.labels ?? [];
  } catch {
    // A PEFT adapter made elsewhere has no metrics.json; labels then come from the base config.
  }
  return {
    settings: {
      r: Number(config.r),
      alpha: Number(config.lora_alpha),
      dropout: Number(config.lora_dropout ?? 0),
      targetModules: (config.target_modules as string[]) ?? [],
      useRslora: Boolean(config.use_rslora),
    },
    modulesToSave: (config.modules_to_save as string[] | null) ?? [],
    lora,
    head,
    labels,
    baseModelName: String(config.base_model_name_or_path ?? ""),
    taskType: config.task_type === "CAUSAL_LM" ? "CAUSAL_LM" : "SEQ_CLS",
    fanInFanOut: config.fan_in_fan_out === true,
  };
}

/** W + scale · B A for every LoRA module, head replaced: the merged weights. */
export function mergedWeights(base: Map<string, NamedArray>, adapter: Adapter): Map<string, NamedArray> {
  const scale = loraScale(adapter.settings);
  const merged = new Map(base);
  for (const [module, { a, b }] of adapter.lora) {
    const weight = base.get(`${module}.weight`);
    if (!weight) throw new AdapterError(`the base model has no ${module}.weight`);
    // GPT-2's Conv1D stores [in, out] (fan_in_fan_out): the delta B A is added transposed.
    const fanInFanOut = adapter.fanInFanOut ?? false;
    const [out, inFeatures] = fanInFanOut ? [weight.shape[1], weight.shape[0]] : weight.shape;
    const r = a.shape[0];
    const data = weight.data.slice();
    for (let i = 0; i < out; i++) {
      for (let k = 0; k < r; k++) {
        const bik = b.data[i * r + k] * scale;
        if (bik === 0) continue;
        for (let j = 0; j < inFeatures; j++) data[fanInFanOut ? j * out + i : i * inFeatures + j] += bik * a.data[k * inFeatures + j];
      }
    }
    merged.set(`${module}.weight`, { shape: weight.shape, data });
  }
  for (const [name, value] of adapter.head) merged.set(name, value);
  return merged;
}

/** Writes a full *ForSequenceClassification Hugging Face folder: base weights with the adapter merged in. */
export async function mergeAdapter(modelDir: string, adapterDir: string, outDir: string): Promise<void> {
  if (causalFamilyOf(await readModelConfigJson(modelDir))) return mergeCausalAdapter(modelDir, adapterDir, outDir);
  const config = await readEncoderConfig(modelDir);
  const adapter = await loadAdapter(adapterDir);
  const labels = adapter.labels.length ? adapter.labels : config.labels ?? [];
  const stored = await readCheckpoint(modelDir);
  const prefix = config.architecture;
  const base = new Map<string, NamedArray>();
  for (const [name, value] of stored) {
    const canonical = canonicalName(name, prefix);
    if (canonical.startsWith(`${prefix}.`) || isHeadParameter(canonical)) base.set(canonical, value);
  }
  const merged = mergedWeights(base, adapter);
  await writeFolderAtomically(outDir, async (tmp) => {
    const raw = { ...config.raw };
    raw.architectures = [sequenceClassificationClass(config.architecture)];
    raw.id2label = Object.fromEntries(labels.map((label, id) => [String(id), label]));
    raw.label2id = Object.fromEntries(labels.map((label, id) => [label, id]));
    await writeFile(path.join(tmp, "config.json"), JSON.stringify(raw, null, 2) + "\n");
    await writeSafetensors(path.join(tmp, "model.safetensors"), merged);
    await copyTokenizerFiles(modelDir, tmp);
  });
}

/** The tokenizer files of a model folder (and its generation settings), for a merged copy of it. */
export async function copyTokenizerFiles(modelDir: string, outDir: string): Promise<void> {
  for (const file of await readdir(modelDir)) {
    if (/^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.txt|vocab\.json|merges\.txt|generation_config\.json)$/.test(file)) {
      await copyFile(path.join(modelDir, file), path.join(outDir, file));
    }
  }
}
