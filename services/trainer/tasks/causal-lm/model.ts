// Decoder-only language models (GPT-2, Llama and its Qwen2 and Mistral variants) on TensorFlow.js ops, with Hugging Face weight names,
// LoRA on any linear layer, and a key/value cache for generation. Hidden states are [batch*length, hidden].
import * as tf from "@tensorflow/tfjs";
import type { CausalConfig } from "./config.ts";
import { loraBranch, type ForwardOptions } from "../../layers/lora-forward.ts";
import { linear } from "../../layers/fused.ts";
import { inPart } from "../../layers/parts.ts";
import { checkpointed } from "../../layers/checkpoint.ts";
import type { LinearModule } from "../../lora.ts";
import type { FrozenLinear } from "../../native/frozen-linear.ts";

/** Token ids of a right-padded batch, row-major [batchSize, length]. */
export interface TokenBatch {
  ids: Int32Array;
  batchSize: number;
  length: number;
}

/** Keys and values of every layer after rotary embedding, [batch, kvHeads, seen, headDim], not repeated for GQA. */
export interface KVCache {
  layers: { key: tf.Tensor4D; value: tf.Tensor4D }[];
  length: number;
}

export class CausalWeightsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CausalWeightsError";
  }
}

const MASKED = -1e9;

/**
 * The shared body of a decoder: linear layers held as kernels [in, out] (GPT-2's Conv1D layout; Llama's
 * [out, in] weights are transposed once at load, since a plain x·K is the fast matmul form), causal
 * attention with grouped-query heads, and the language-model head.
 */
export abstract class CausalLM {
  constructor(
    readonly config: CausalConfig,
    /** Frozen parameters by Hugging Face name; linear weights as [in, out] kernels. */
    readonly weights: Map<string, tf.Tensor>,
    /** The output projection as [hidden, vocab] (the transposed embedding when tied). */
    protected readonly lmHeadKernel: tf.Tensor2D,
    /** Linear weights held by the addon outside the wasm heap (see lora.quantization), by Hugging Face name. */
    readonly frozenLinears: Map<string, FrozenLinear> = new Map(),
  ) {}

  /** Every linear layer LoRA may target, with PEFT's in/out features (the LM head excluded, as PEFT's all-linear does). */
  abstract linearModules(): LinearModule[];

  protected abstract embed(batch: TokenBatch, start: number, options: ForwardOptions): tf.Tensor2D;
  protected abstract block(h: tf.Tensor2D, layer: number, batch: TokenBatch, start: number, options: ForwardOptions, cache?: KVCache): tf.Tensor2D;
  /** The Hugging Face name prefix of a decoder layer's parameters ("model.layers.3"). */
  protected abstract layerPrefix(layer: number): string;
  protected abstract finalNorm(h: tf.Tensor2D, options: ForwardOptions): tf.Tensor2D;

  protected param(name: string, options: ForwardOptions): tf.Tensor {
    const value = options.overrides?.get(name) ?? this.weights.get(name);
    if (!value) throw new CausalWeightsError(`model weight ${name} is missing`);
    return value;
  }

  /** `inputGrad` false when nothing trained lies upstream of x (see fused.ts linear). */
  protected linear(x: tf.Tensor2D, module: string, options: ForwardOptions, bias: boolean, inputGrad = true): tf.Tensor2D {
    const frozen = options.overrides?.has(`${module}.weight`) ? undefined : this.frozenLinears.get(`${module}.weight`);
    const weight = frozen ? { frozen } : { transposedWeight: this.param(`${module}.weight`, options) as tf.Tensor2D };
    const biasTensor = bias ? this.param(`${module}.bias`, options) : undefined;
    return linear(x, weight, biasTensor, loraBranch(x, options.lora?.get(module), options.dropout), { inputGrad });
  }

  /** Whether a layer's input needs a gradient: above the first layer, or when any overriding parameter trains. */
  protected inputNeedsGrad(layer: number, options: ForwardOptions): boolean {
    return layer > 0 || [...(options.overrides?.values() ?? [])].some((value) => value instanceof tf.Variable && value.trainable);
  }

  protected dropout<T extends tf.Tensor>(x: T, rate: number, options: ForwardOptions): T {
    return options.dropout && rate > 0 ? options.dropout.apply(x, rate) : x;
  }

  /**
   * Scaled dot-product attention of new queries over cached plus new keys. q [B, H, T, d], k/v [B, kvH, T, d];
   * the cache (when given) is extended in place with this call's keys and values.
   */
  protected attend(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, layer: number, batch: TokenBatch, options: ForwardOptions, cache?: KVCache): tf.Tensor2D {
    return inPart("attention", () => this.attendHeads(q, k, v, layer, batch, options, cache));
  }

  private attendHeads(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, layer: number, batch: TokenBatch, options: ForwardOptions, cache?: KVCache): tf.Tensor2D {
    const { numHeads, numKeyValueHeads, headDim } = this.config;
    const { batchSize, length } = batch;
    let keys = k;
    let values = v;
    const past = cache ? cache.length : 0;
    if (cache) {
      const stored = cache.layers[layer];
      if (stored) {
        keys = tf.keep(tf.concat([stored.key, k], 2));
        values = tf.keep(tf.concat([stored.value, v], 2));
        stored.key.dispose();
        stored.value.dispose();
      } else {
        keys = tf.keep(k.clone());
        values = tf.keep(v.clone());
      }
      cache.layers[layer] = { key: keys, value: values };
    }
    const total = past + length;
    const groups = numHeads / numKeyValueHeads;
    const repeat = (x: tf.Tensor4D) =>
      groups === 1 ? x : repeatGroups(x.reshape([batchSize, numKeyValueHeads, 1, total * headDim]) as tf.Tensor4D, groups).reshape([batchSize, numHeads, total, headDim]);
    const scores = q.matMul(repeat(keys), false, true).div(Math.sqrt(headDim));
    const mask = new Float32Array(length * total);
    // Causal (keys after the query masked) and, on a sliding layer, keys at or before query - window too.
    const window = this.config.layerWindows[layer] ?? Infinity;
    for (let i = 0; i < length; i++) {
      for (let j = 0; j < total; j++) if (j > past + i || j <= past + i - window) mask[i * total + j] = MASKED;
    }
    const probabilities = this.dropout(tf.softmax(scores.add(tf.tensor2d(mask, [length, total]))), this.config.attentionDropout, options);
    return probabilities.matMul(repeat(values)).transpose([0, 2, 1, 3]).reshape([batchSize * length, numHeads * headDim]) as tf.Tensor2D;
  }

  /** Final hidden states [batch*length, hidden] for tokens at positions past..past+length-1 (past = cache length). */
  hidden(batch: TokenBatch, options: ForwardOptions, cache?: KVCache): tf.Tensor2D {
    const start = cache ? cache.length : 0;
    if (start + batch.length > this.config.maxPositions && this.config.family === "gpt2") {
      throw new CausalWeightsError(`sequence of ${start + batch.length} tokens exceeds the ${this.config.maxPositions} positions of this model`);
    }
    let h = this.embed(batch, start, options);
    // Outside a gradient tape (evaluation, generation) nothing needs a layer's intermediates once its
    // output exists: each layer runs in its own tidy, so the peak holds one layer's activations.
    const recording = tf.engine().state.gradientDepth > 0;
    for (let layer = 0; layer < this.config.numLayers; layer++) {
      if (!recording) {
        const previous = h;
        h = tf.tidy(() => this.block(previous, layer, batch, start, options, cache));
        previous.dispose();
      } else h = options.checkpointLayers && !cache ? this.checkpointedBlock(h, layer, batch, options) : this.block(h, layer, batch, start, options, cache);
    }
    if (cache) cache.length += batch.length;
    return this.finalNorm(h, options);
  }

  /** A training block whose intermediates are recomputed in the backward (layers/checkpoint.ts), with the same dropout masks. */
  private checkpointedBlock(h: tf.Tensor2D, layer: number, batch: TokenBatch, options: ForwardOptions): tf.Tensor2D {
    const prefix = `${this.layerPrefix(layer)}.`;
    const trainables: tf.Tensor[] = [];
    for (const [module, { a, b }] of options.lora ?? []) if (module.startsWith(prefix)) trainables.push(a, b);
    for (const [name, value] of options.overrides ?? []) if (name.startsWith(prefix) && value instanceof tf.Variable && value.trainable) trainables.push(value);
    const position = options.dropout?.position ?? 0;
    return checkpointed(h, trainables, this.inputNeedsGrad(layer, options), (input, replay) =>
      this.block(input, layer, batch, 0, replay && options.dropout ? { ...options, dropout: options.dropout.replayFrom(position) } : options),
    );
  }

  /** Next-token logits [rows, vocab] of hidden states [rows, hidden]. */
  logits(hidden: tf.Tensor2D): tf.Tensor2D {
    return linear(hidden, { transposedWeight: this.lmHeadKernel }, undefined);
  }

  dispose(): void {
    for (const tensor of this.weights.values()) tensor.dispose();
    for (const frozen of this.frozenLinears.values()) frozen.dispose();
    this.lmHeadKernel.dispose();
  }
}

/**
 * Rows of a [batch*length, hidden] tensor (ascending row numbers), as products with one-hot selection
 * matrices per sequence: their gradients are plain matmuls, where gather's needs UnsortedSegmentSum,
 * which the wasm backend lacks; per sequence, the selections stay at most length × length.
 */
export function selectRows(hidden: tf.Tensor2D, rows: number[], length: number): tf.Tensor2D {
  return inPart("loss", () => selectRowsOf(hidden, rows, length));
}

function selectRowsOf(hidden: tf.Tensor2D, rows: number[], length: number): tf.Tensor2D {
  const pieces: tf.Tensor2D[] = [];
  for (let start = 0; start < rows.length; ) {
    const sequence = Math.floor(rows[start] / length);
    let end = start;
    while (end < rows.length && Math.floor(rows[end] / length) === sequence) end++;
    const local = rows.slice(start, end).map((row) => row - sequence * length);
    const selection = tf.oneHot(tf.tensor1d(local, "int32"), length).cast("float32") as tf.Tensor2D;
    pieces.push(selection.matMul(hidden.slice([sequence * length, 0], [length, hidden.shape[1]])) as tf.Tensor2D);
    start = end;
  }
  return pieces.length === 1 ? pieces[0] : tf.concat(pieces, 0);
}

/**
 * x [a, b, 1, c] repeated `groups` times along its third axis (grouped-query heads), as a broadcast
 * add: tfjs-wasm's Tile took ~70× longer for a key/value projection, and its gradient ~12×.
 */
export function repeatGroups(x: tf.Tensor4D, groups: number): tf.Tensor4D {
  return x.add(tf.zeros([1, 1, groups, 1]));
}

export function emptyCache(): KVCache {
  return { layers: [], length: 0 };
}

export function disposeCache(cache: KVCache): void {
  for (const { key, value } of cache.layers) {
    key.dispose();
    value.dispose();
  }
  cache.layers = [];
}
