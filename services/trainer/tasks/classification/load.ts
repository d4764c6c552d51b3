// Loads a Hugging Face encoder folder (config.json, model.safetensors, tokenizer.json), shares loaded
// base models between training jobs, and builds classification heads.
import { existsSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { ModelConfigError } from "../../hf/config.ts";
import { readCheckpoint, transposed } from "../../hf/weights.ts";
import { Rng } from "../../rng.ts";
import type { NamedArray } from "../../safetensors.ts";
import { TextTokenizer } from "../../tokenizer.ts";
import { readEncoderConfig, type EncoderConfig } from "./config.ts";
import { EncoderClassifier, encoderLinearModules } from "./encoder.ts";
import { frozenWeightBytes, modelParameters } from "../../memory-plan.ts";
import { ensureWasmHeapRoom, withWasmHeapErrors } from "../../wasm-heap.ts";

export interface PretrainedModel {
  dir: string;
  config: EncoderConfig;
  model: EncoderClassifier;
  tokenizer: TextTokenizer;
  /** Head weights as the checkpoint stores them (empty for a bare *Model checkpoint). */
  checkpointHead: Map<string, NamedArray>;
}

const HEAD_ROOTS = ["pre_classifier.", "classifier."];

/** Hugging Face's own renames: old checkpoints name LayerNorm parameters gamma/beta. */
export function canonicalName(name: string, prefix: string): string {
  let canonical = name.replace(/\.gamma$/, ".weight").replace(/\.beta$/, ".bias");
  if (/^(embeddings|encoder|transformer|pooler)\./.test(canonical)) canonical = `${prefix}.${canonical}`;
  return canonical;
}

export function isHeadParameter(name: string): boolean {
  return HEAD_ROOTS.some((root) => name.startsWith(root));
}

export async function loadPretrained(dir: string): Promise<PretrainedModel> {
  const config = await readEncoderConfig(dir);
  const prefix = config.architecture;
  if (!existsSync(path.join(dir, "tokenizer.json"))) throw new ModelConfigError(`${dir} has no tokenizer.json`);
  // Refused before anything is read when the weights cannot fit the wasm heap.
  const what = `the weights of ${path.basename(dir)}`;
  const weightBytes = frozenWeightBytes(modelParameters(config.raw), "none");
  ensureWasmHeapRoom(what, weightBytes);
  const stored = new Map([...(await readCheckpoint(dir))].map(([name, array]) => [canonicalName(name, prefix), array]));
  if (!stored.has(`${prefix}.embeddings.word_embeddings.weight`)) {
    throw new ModelConfigError(`${dir}: the checkpoint holds no ${prefix} encoder weights`);
  }
  const tokenizer = await TextTokenizer.load(dir, { padId: config.padTokenId, usesTypeIds: config.typeVocabSize > 1 });
  // Weights go to the device last, once nothing else can refuse the folder.
  return withWasmHeapErrors(what, weightBytes, () => toDevice(dir, config, stored, tokenizer));
}

function toDevice(dir: string, config: EncoderConfig, stored: Map<string, NamedArray>, tokenizer: TextTokenizer): PretrainedModel {
  const prefix = config.architecture;
  const weights = new Map<string, tf.Tensor>();
  const linearWeights = new Map<string, tf.Tensor2D>();
  const linearModules = new Set([...encoderLinearModules(config), `${prefix}.pooler.dense`]);
  const checkpointHead = new Map<string, NamedArray>();
  for (const [canonical, array] of stored) {
    const module = canonical.replace(/\.weight$/, "");
    if (isHeadParameter(canonical)) checkpointHead.set(canonical, array);
    else if (canonical.endsWith(".weight") && linearModules.has(module)) linearWeights.set(module, transposed(array));
    else if (canonical.startsWith(`${prefix}.`)) weights.set(canonical, tf.tensor(array.data, array.shape, "float32"));
  }
  return { dir, config, model: new EncoderClassifier(config, weights, linearWeights), tokenizer, checkpointHead };
}

const shared = new Map<string, Promise<PretrainedModel>>();

/**
 * Training reads base weights and never changes them, so jobs on one base model share one load:
 * the least recently used model beyond `capacity` (the entry point's MODEL_CACHE_SIZE) is disposed.
 * Keyed by folder and the newest modification time of its files, so a replaced model is loaded afresh.
 */
export async function loadPretrainedShared(dir: string, capacity: number): Promise<PretrainedModel> {
  const names = await readdir(dir);
  const times = await Promise.all(names.map(async (name) => (await stat(path.join(dir, name))).mtimeMs));
  const key = `${path.resolve(dir)}@${Math.max(0, ...times)}`;
  const entry = shared.get(key) ?? loadPretrained(dir);
  shared.delete(key);
  shared.set(key, entry);
  entry.catch(() => shared.delete(key));
  for (const [oldKey, old] of shared) {
    if (shared.size <= capacity) break;
    shared.delete(oldKey);
    void old.then((model) => model.model.dispose(), () => {});
  }
  return entry;
}

export interface HeadParameter {
  name: string;
  shape: number[];
}

/** The classification head's parameters and the PEFT `modules_to_save` that hold them. */
export function headLayout(pretrained: PretrainedModel, numLabels: number): { modulesToSave: string[]; parameters: HeadParameter[] } {
  const { config } = pretrained;
  const hidden = config.hiddenSize;
  const linear = (module: string, out: number, inFeatures: number): HeadParameter[] => [
    { name: `${module}.weight`, shape: [out, inFeatures] },
    { name: `${module}.bias`, shape: [out] },
  ];
  switch (config.architecture) {
    case "distilbert":
      return { modulesToSave: ["pre_classifier", "classifier"], parameters: [...linear("pre_classifier", hidden, hidden), ...linear("classifier", numLabels, hidden)] };
    case "roberta":
      return { modulesToSave: ["classifier"], parameters: [...linear("classifier.dense", hidden, hidden), ...linear("classifier.out_proj", numLabels, hidden)] };
    case "bert": {
      // A bare BertModel saved without its pooler gets a fresh one, trained and saved with the head.
      const hasPooler = pretrained.model.linearShape("bert.pooler.dense") !== undefined;
      return hasPooler
        ? { modulesToSave: ["classifier"], parameters: linear("classifier", numLabels, hidden) }
        : { modulesToSave: ["classifier", "pooler"], parameters: [...linear("classifier", numLabels, hidden), ...linear("bert.pooler.dense", hidden, hidden)] };
    }
  }
}

/**
 * Initial head values: the checkpoint's where the shape fits, else Hugging Face's initialisation
 * (weights normal(0, initializer_range), biases zero) drawn from the seed.
 */
export function initialHead(pretrained: PretrainedModel, numLabels: number, seed: number): Map<string, NamedArray> {
  const rng = Rng.derive(seed, 0x4ead);
  const head = new Map<string, NamedArray>();
  for (const { name, shape } of headLayout(pretrained, numLabels).parameters) {
    const stored = pretrained.checkpointHead.get(name);
    const size = shape.reduce((a, b) => a * b, 1);
    if (stored && stored.shape.join() === shape.join()) {
      head.set(name, { shape, data: stored.data.slice() });
    } else if (name.endsWith(".bias")) {
      head.set(name, { shape, data: new Float32Array(size) });
    } else {
      head.set(name, { shape, data: rng.fill(size, (r) => r.normal(0, pretrained.config.initializerRange)) });
    }
  }
  return head;
}
