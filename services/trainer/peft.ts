// Reads and writes adapters in Hugging Face PEFT's on-disk layout (docs/adapter-format.md):
// adapter_config.json, adapter_model.safetensors, and our metrics.json beside them.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { writeFolderAtomically } from "./atomic-folder.ts";
import { headKey, loraKey, parsePeftKey, type LoraWeights } from "./lora.ts";
import { readSafetensors, writeSafetensors, type NamedArray } from "./safetensors.ts";
import type { LoraSettings } from "./settings.ts";

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

