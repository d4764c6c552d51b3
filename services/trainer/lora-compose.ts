// Adapter composition with the semantics of PEFT's `add_weighted_adapter` for `linear`, `cat` and
// `svd` (peft/tuners/lora/model.py), so a composition made here matches one made in Python:
// - the new adapter's r is the shared rank (linear), the sum of ranks (cat) or `svdRank`, default
//   the largest rank (svd); lora_alpha = r, so its scale is 1; target_modules is the union;
// - linear: A = Σ √(wᵢ·sᵢ)·Aᵢ and B = Σ √(wᵢ·sᵢ)·Bᵢ (sᵢ each source's scale), all ranks equal. This is
//   not the weighted sum of the deltas (BA has cross terms) unless one weight carries everything;
// - cat: A = [w₁s₁A₁; w₂s₂A₂; …] stacked by rows, B = [B₁ B₂ …] by columns: exactly Σ wᵢsᵢBᵢAᵢ;
// - svd: the weighted sum of deltas Σ wᵢsᵢBᵢAᵢ truncated to `svdRank` by its SVD: B = U·S, A = Vᵀ.
// A module only some sources adapt takes only those. One source is always combined `linear`, as PEFT does.
// Heads (modules_to_save): PEFT gives the new adapter a fresh copy of the base model's module, which
// for our classifiers is an untrained head; here the sources' trained heads are averaged with the
// weights normalised to sum 1, and classifiers must share one label list.
import { AdapterError, type Adapter } from "./peft.ts";
import { loraScale, type LoraWeights } from "./lora.ts";
import { svdOfProduct } from "./low-rank-svd.ts";
import type { NamedArray } from "./safetensors.ts";
import type { HyperparameterOptions, LoraOptions } from "./settings.ts";

export const COMPOSITION_TYPES = ["linear", "cat", "svd"] as const;
export type CompositionType = (typeof COMPOSITION_TYPES)[number];

export interface CompositionOptions {
  type: CompositionType;
  /** One weight per source adapter, in order. */
  weights: number[];
  /** svd only: the new adapter's rank (default: the largest source rank). */
  svdRank?: number;
}

/** One source adapter with the data and settings of the job that trained it, to evaluate the composition on. */
export interface CompositionSource {
  adapterDir: string;
  /** How the model card names this source (the worker gives the adapter id); the folder's name when absent. */
  name?: string;
  trainFile: string;
  validationFile?: string;
  validationSplit?: number;
  lora: LoraOptions;
  hyper: HyperparameterOptions;
}

/** A composition to run: how to combine, and the sources in order. */
export interface CompositionRequest extends CompositionOptions {
  sources: CompositionSource[];
}

const sameList = (a: readonly string[], b: readonly string[]) => a.length === b.length && a.every((item, index) => item === b[index]);

/** Throws AdapterError unless the sources can be composed (same base model, task, layout, labels). */
function assertComposable(sources: Adapter[], options: CompositionOptions): void {
  if (sources.length === 0) throw new AdapterError("compose needs at least one adapter");
  if (options.weights.length !== sources.length) throw new AdapterError(`${sources.length} adapters but ${options.weights.length} weights`);
  if (!options.weights.every(Number.isFinite)) throw new AdapterError("weights must be finite numbers");
  const [first, ...rest] = sources;
  for (const other of rest) {
    if (other.baseModelName !== first.baseModelName) throw new AdapterError(`adapters are for different base models (${first.baseModelName}, ${other.baseModelName})`);
    if ((other.taskType ?? "SEQ_CLS") !== (first.taskType ?? "SEQ_CLS")) throw new AdapterError("adapters are for different tasks");
    if (Boolean(other.fanInFanOut) !== Boolean(first.fanInFanOut)) throw new AdapterError("adapters disagree on fan_in_fan_out");
    if (!sameList(other.labels, first.labels)) throw new AdapterError(`classifiers with different labels cannot be composed (${first.labels.join(",")} and ${other.labels.join(",")})`);
    if (!sameList([...other.head.keys()].sort(), [...first.head.keys()].sort())) throw new AdapterError("adapters train different head modules");
  }
  const type = sources.length === 1 ? "linear" : options.type;
  if (type === "linear") {
    if (new Set(sources.map((source) => source.settings.r)).size > 1) throw new AdapterError("linear composition needs adapters of one rank; use cat or svd");
    // √(w·s) of a negative weight is not a real number (PEFT would produce NaN).
    if (options.weights.some((weight) => weight < 0)) throw new AdapterError("linear composition needs weights ≥ 0; use cat or svd for negative weights");
  }
  if (options.svdRank !== undefined && type !== "svd") throw new AdapterError("svdRank is only for svd");
  if (first.head.size > 0 && options.weights.reduce((a, b) => a + b, 0) === 0) {
    throw new AdapterError("the weights of classifiers must not sum to 0: their heads are averaged with the weights normalised to sum 1");
  }
}

function scaledSum(parts: { data: Float32Array; factor: number }[], shape: number[]): NamedArray {
  const data = new Float32Array(parts[0].data.length);
  for (const { data: source, factor } of parts) for (let i = 0; i < data.length; i++) data[i] += factor * source[i];
  return { shape: [...shape], data };
}

/** linear: √(wᵢ·sᵢ)-weighted sums of the As and of the Bs. */
function composeLinear(pairs: { weights: LoraWeights; factor: number }[]): LoraWeights {
  const roots = pairs.map(({ weights, factor }) => ({ weights, root: Math.sqrt(factor) }));
  return {
    a: scaledSum(roots.map(({ weights, root }) => ({ data: weights.a.data, factor: root })), roots[0].weights.a.shape),
    b: scaledSum(roots.map(({ weights, root }) => ({ data: weights.b.data, factor: root })), roots[0].weights.b.shape),
  };
}

/** cat: (wᵢ·sᵢ)·Aᵢ stacked by rows, Bᵢ side by side, zero-padded to `rank` where sources lack the module. */
function composeCat(pairs: { weights: LoraWeights; factor: number }[], rank: number): LoraWeights {
  const inFeatures = pairs[0].weights.a.shape[1];
  const outFeatures = pairs[0].weights.b.shape[0];
  const a = new Float32Array(rank * inFeatures);
  const b = new Float32Array(outFeatures * rank);
  let offset = 0;
  for (const { weights, factor } of pairs) {
    const r = weights.a.shape[0];
    for (let i = 0; i < r * inFeatures; i++) a[offset * inFeatures + i] = factor * weights.a.data[i];
    for (let row = 0; row < outFeatures; row++) for (let j = 0; j < r; j++) b[row * rank + offset + j] = weights.b.data[row * r + j];
    offset += r;
  }
  return { a: { shape: [rank, inFeatures], data: a }, b: { shape: [outFeatures, rank], data: b } };
}

/** svd: Σ (wᵢ·sᵢ)·BᵢAᵢ, truncated to `rank` singular triplets: B = U·S, A = Vᵀ (zero-padded past the matrix's rank). */
function composeSvd(pairs: { weights: LoraWeights; factor: number }[], rank: number): LoraWeights {
  const total = pairs.reduce((sum, { weights }) => sum + weights.a.shape[0], 0);
  const { a: catA, b: catB } = composeCat(pairs, total);
  const [outFeatures, inFeatures] = [catB.shape[0], catA.shape[1]];
  const svd = svdOfProduct(Float64Array.from(catB.data), Float64Array.from(catA.data), outFeatures, total, inFeatures);
  const kept = Math.min(rank, svd.k);
  const a = new Float32Array(rank * inFeatures);
  const b = new Float32Array(outFeatures * rank);
  for (let j = 0; j < kept; j++) {
    for (let col = 0; col < inFeatures; col++) a[j * inFeatures + col] = svd.v[col * svd.k + j];
    for (let row = 0; row < outFeatures; row++) b[row * rank + j] = svd.u[row * svd.k + j] * svd.s[j];
  }
  return { a: { shape: [rank, inFeatures], data: a }, b: { shape: [outFeatures, rank], data: b } };
}

/** The heads averaged with the weights normalised to sum 1. */
function composeHeads(sources: Adapter[], weights: number[]): Map<string, NamedArray> {
  const head = new Map<string, NamedArray>();
  const total = weights.reduce((a, b) => a + b, 0);
  for (const [name, tensor] of sources[0].head) {
    head.set(name, scaledSum(sources.map((source, index) => ({ data: source.head.get(name)!.data, factor: weights[index] / total })), tensor.shape));
  }
  return head;
}

export function composeAdapters(sources: Adapter[], options: CompositionOptions): Adapter {
  assertComposable(sources, options);
  const type: CompositionType = sources.length === 1 ? "linear" : options.type;
  const ranks = sources.map((source) => source.settings.r);
  const rank = type === "linear" ? ranks[0] : type === "cat" ? ranks.reduce((a, b) => a + b, 0) : (options.svdRank ?? Math.max(...ranks));
  const modules = [...new Set(sources.flatMap((source) => [...source.lora.keys()]))].sort();
  const lora = new Map<string, LoraWeights>();
  for (const module of modules) {
    const pairs = sources.flatMap((source, index) => {
      const weights = source.lora.get(module);
      return weights ? [{ weights, factor: options.weights[index] * loraScale(source.settings) }] : [];
    });
    lora.set(module, type === "linear" ? composeLinear(pairs) : type === "cat" ? composeCat(pairs, rank) : composeSvd(pairs, rank));
  }
  const first = sources[0];
  return {
    ...first,
    settings: {
      r: rank,
      alpha: rank,
      dropout: first.settings.dropout,
      targetModules: [...new Set(sources.flatMap((source) => source.settings.targetModules))].sort(),
      useRslora: false,
    },
    lora,
    head: first.head.size > 0 ? composeHeads(sources, options.weights) : new Map(),
  };
}
