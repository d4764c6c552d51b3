// Forward passes of DistilBERT, BERT and RoBERTa for sequence classification, with Hugging Face
// weight names, written on TensorFlow.js ops. Hidden states are kept as [batch*length, hidden].
import * as tf from "@tensorflow/tfjs";
import { activation, attention, attentionOverRows, layerNorm, linear, rowAttentionAvailable } from "../../layers/fused.ts";
import { firstRowsOf, loraBranch, loraLinear, type FirstRows, type ForwardOptions } from "../../layers/lora-forward.ts";
import { inPart } from "../../layers/parts.ts";
import type { PaddedBatch } from "../../tokenizer.ts";
import { initLoraModules, type LoraWeights } from "../../lora.ts";
import type { LoraSettings } from "../../settings.ts";
import type { EncoderConfig } from "./config.ts";

const LOWEST_FLOAT32 = -3.4028234663852886e38;

export function prefixOf(config: EncoderConfig): string {
  return config.architecture;
}

/** Module paths of one encoder layer's linears and norms, by role. */
export function layerModules(config: EncoderConfig, layer: number) {
  if (config.architecture === "distilbert") {
    const p = `distilbert.transformer.layer.${layer}`;
    return {
      query: `${p}.attention.q_lin`,
      key: `${p}.attention.k_lin`,
      value: `${p}.attention.v_lin`,
      attentionOutput: `${p}.attention.out_lin`,
      attentionNorm: `${p}.sa_layer_norm`,
      intermediate: `${p}.ffn.lin1`,
      output: `${p}.ffn.lin2`,
      outputNorm: `${p}.output_layer_norm`,
    };
  }
  const p = `${config.architecture}.encoder.layer.${layer}`;
  return {
    query: `${p}.attention.self.query`,
    key: `${p}.attention.self.key`,
    value: `${p}.attention.self.value`,
    attentionOutput: `${p}.attention.output.dense`,
    attentionNorm: `${p}.attention.output.LayerNorm`,
    intermediate: `${p}.intermediate.dense`,
    output: `${p}.output.dense`,
    outputNorm: `${p}.output.LayerNorm`,
  };
}

/** Every nn.Linear of the encoder body (the modules LoRA may target). */
export function encoderLinearModules(config: EncoderConfig): string[] {
  const names: string[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const m = layerModules(config, layer);
    names.push(m.query, m.key, m.value, m.attentionOutput, m.intermediate, m.output);
  }
  return names;
}

/** Fresh LoRA pairs for the encoder linears the settings target. */
export function initEncoderLora(model: EncoderClassifier, settings: LoraSettings, seed: number): Map<string, LoraWeights> {
  const modules = encoderLinearModules(model.config).flatMap((name) => {
    const shape = model.linearShape(name);
    return shape ? [{ name, inFeatures: shape[1], outFeatures: shape[0] }] : [];
  });
  return initLoraModules(modules, settings, seed, model.config.architecture);
}

export class EncoderClassifier {
  constructor(
    readonly config: EncoderConfig,
    /** Frozen weights by Hugging Face name, with the architecture prefix; linear weights are not here. */
    readonly weights: Map<string, tf.Tensor>,
    /** Frozen nn.Linear weights by module path, stored transposed: [in, out]. */
    readonly linearWeights: Map<string, tf.Tensor2D>,
  ) {}

  /** [out, in] of a frozen linear module, or undefined when the checkpoint lacks it. */
  linearShape(module: string): [number, number] | undefined {
    const transposed = this.linearWeights.get(module);
    return transposed ? [transposed.shape[1], transposed.shape[0]] : undefined;
  }

  dispose(): void {
    for (const tensor of [...this.weights.values(), ...this.linearWeights.values()]) tensor.dispose();
  }

  private param(name: string, options: ForwardOptions): tf.Tensor {
    const value = options.overrides?.get(name) ?? this.weights.get(name);
    if (!value) throw new Error(`model weight ${name} is missing`);
    return value;
  }

  /**
   * `rows` when x holds only the first row of each sequence (dropout then draws as for all rows);
   * `inputGrad` false when nothing trained lies upstream of x (see fused.ts linear).
   */
  private linear(x: tf.Tensor2D, module: string, options: ForwardOptions, rows?: FirstRows, inputGrad = true): tf.Tensor2D {
    const bias = this.param(`${module}.bias`, options);
    const lora = options.lora?.get(module);
    const trained = options.overrides?.get(`${module}.weight`);
    if (trained) return loraLinear(x, trained, bias, lora, options.dropout, rows, inputGrad);
    const frozen = this.linearWeights.get(module);
    if (!frozen) throw new Error(`model weight ${module}.weight is missing`);
    return linear(x, { transposedWeight: frozen }, bias, loraBranch(x, lora, options.dropout, rows), { inputGrad });
  }

  /** Whether a layer's input needs a gradient: above the first layer, or when an embedding parameter trains. */
  private inputNeedsGrad(layer: number, options: ForwardOptions): boolean {
    if (layer > 0) return true;
    const prefix = `${prefixOf(this.config)}.embeddings.`;
    return [...(options.overrides ?? [])].some(([name, value]) => name.startsWith(prefix) && value instanceof tf.Variable && value.trainable);
  }

  private layerNorm(x: tf.Tensor2D, module: string, options: ForwardOptions): tf.Tensor2D {
    return layerNorm(x, this.param(`${module}.weight`, options), this.param(`${module}.bias`, options), this.config.layerNormEps);
  }

  private dropout<T extends tf.Tensor>(x: T, rate: number, options: ForwardOptions, rows?: FirstRows): T {
    if (!options.dropout) return x;
    return rows ? options.dropout.applyFirstRows(x, rate, rows) : options.dropout.apply(x, rate);
  }

  private positionIds(batch: PaddedBatch): Int32Array {
    const positions = new Int32Array(batch.batchSize * batch.length);
    const padding = this.config.padTokenId;
    for (let row = 0; row < batch.batchSize; row++) {
      let count = 0;
      for (let column = 0; column < batch.length; column++) {
        const index = row * batch.length + column;
        if (this.config.architecture === "roberta") {
          // RoBERTa numbers real tokens from padding_idx + 1; padding tokens sit at padding_idx.
          if (batch.inputIds[index] !== padding) count++;
          positions[index] = batch.inputIds[index] !== padding ? padding + count : padding;
        } else {
          positions[index] = column;
        }
      }
    }
    return positions;
  }

  private embed(batch: PaddedBatch, options: ForwardOptions): tf.Tensor2D {
    return inPart("embeddings", () => this.embedParts(batch, options));
  }

  private embedParts(batch: PaddedBatch, options: ForwardOptions): tf.Tensor2D {
    const prefix = prefixOf(this.config);
    const ids = tf.tensor1d(batch.inputIds, "int32");
    const positions = tf.tensor1d(this.positionIds(batch), "int32");
    let sum = tf.gather(this.param(`${prefix}.embeddings.word_embeddings.weight`, options), ids).add(
      tf.gather(this.param(`${prefix}.embeddings.position_embeddings.weight`, options), positions),
    );
    if (this.config.architecture !== "distilbert") {
      const types = tf.tensor1d(batch.typeIds, "int32");
      sum = sum.add(tf.gather(this.param(`${prefix}.embeddings.token_type_embeddings.weight`, options), types));
    }
    const normalised = this.layerNorm(sum as tf.Tensor2D, `${prefix}.embeddings.LayerNorm`, options);
    return this.dropout(normalised, this.config.hiddenDropout, options);
  }

  private attention(h: tf.Tensor2D, maskAdd: tf.Tensor, layer: number, batch: PaddedBatch, options: ForwardOptions): tf.Tensor2D {
    const m = layerModules(this.config, layer);
    const { batchSize, length } = batch;
    const heads = this.config.numHeads;
    const headSize = this.config.hiddenSize / heads;
    const dropoutRate = this.config.attentionDropout;
    // The dropout mask (divided by the keep rate) as the same call on the probabilities would draw it.
    const keepMask = () => (options.dropout && dropoutRate > 0 ? options.dropout.apply(tf.ones([batchSize, heads, length, length]), dropoutRate) : undefined);
    let context: tf.Tensor2D;
    if (rowAttentionAvailable()) {
      // Heads read and written by strides in the addon: no split/merge transposes.
      const inputGrad = this.inputNeedsGrad(layer, options);
      const [query, key, value] = [m.query, m.key, m.value].map((module) => this.linear(h, module, options, undefined, inputGrad));
      context = attentionOverRows(query, key, value, { batch: batchSize, heads, length, headSize }, { scale: 1 / Math.sqrt(headSize), causal: false, keyMaskAdd: maskAdd, keep: keepMask() });
    } else {
      context = this.attentionByTransposes(h, maskAdd, layer, batch, options, keepMask);
    }
    let output = this.linear(context, m.attentionOutput, options);
    if (this.config.architecture !== "distilbert") output = this.dropout(output, this.config.hiddenDropout, options);
    return this.layerNorm(output.add(h) as tf.Tensor2D, m.attentionNorm, options);
  }

  /** tfjs's own ops: heads split into [batch, heads, length, headSize] and merged back by transposes. */
  private attentionByTransposes(h: tf.Tensor2D, maskAdd: tf.Tensor, layer: number, batch: PaddedBatch, options: ForwardOptions, keepMask: () => tf.Tensor | undefined): tf.Tensor2D {
    const m = layerModules(this.config, layer);
    const { batchSize, length } = batch;
    const heads = this.config.numHeads;
    const headSize = this.config.hiddenSize / heads;
    const split = (x: tf.Tensor2D) => inPart("heads split/merge", () => x.reshape([batchSize, length, heads, headSize]).transpose([0, 2, 1, 3]) as tf.Tensor4D);
    const inputGrad = this.inputNeedsGrad(layer, options);
    const query = split(this.linear(h, m.query, options, undefined, inputGrad));
    const key = split(this.linear(h, m.key, options, undefined, inputGrad));
    const value = split(this.linear(h, m.value, options, undefined, inputGrad));
    const heads4d = attention(query, key, value, maskAdd, 1 / Math.sqrt(headSize), keepMask());
    return inPart("heads split/merge", () => heads4d.transpose([0, 2, 1, 3]).reshape([batchSize * length, this.config.hiddenSize]) as tf.Tensor2D);
  }

  /**
   * The last layer when only each sequence's first token goes on (the classification head reads
   * nothing else): keys and values over every row, everything else (query, attention output, norms,
   * feed-forward) on the first rows only; the same values, gradients and dropout draws as all rows.
   */
  private firstTokenAttention(h: tf.Tensor2D, maskAdd: tf.Tensor, layer: number, batch: PaddedBatch, options: ForwardOptions): tf.Tensor2D {
    const m = layerModules(this.config, layer);
    const { batchSize, length } = batch;
    const heads = this.config.numHeads;
    const headSize = this.config.hiddenSize / heads;
    const rows = { sequences: batchSize, length };
    const first = firstRowsOf(h, rows);
    const inputGrad = this.inputNeedsGrad(layer, options);
    const query = this.linear(first, m.query, options, rows, inputGrad).reshape([batchSize, 1, heads, headSize]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
    const split = (x: tf.Tensor2D) => x.reshape([batchSize, length, heads, headSize]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
    const key = split(this.linear(h, m.key, options, undefined, inputGrad));
    const value = split(this.linear(h, m.value, options, undefined, inputGrad));
    const rate = this.config.attentionDropout;
    const keep = options.dropout && rate > 0 ? options.dropout.apply(tf.ones([batchSize, heads, length, length]), rate).slice([0, 0, 0, 0], [batchSize, heads, 1, length]) : undefined;
    const context = attention(query, key, value, maskAdd, 1 / Math.sqrt(headSize), keep).reshape([batchSize, this.config.hiddenSize]) as tf.Tensor2D;
    let output = this.linear(context, m.attentionOutput, options, rows);
    if (this.config.architecture !== "distilbert") output = this.dropout(output, this.config.hiddenDropout, options, rows);
    return this.layerNorm(output.add(first) as tf.Tensor2D, m.attentionNorm, options);
  }

  private feedForward(h: tf.Tensor2D, layer: number, options: ForwardOptions, rows?: FirstRows): tf.Tensor2D {
    const m = layerModules(this.config, layer);
    const inner = activation(this.config.hiddenAct, this.linear(h, m.intermediate, options, rows)) as tf.Tensor2D;
    const output = this.dropout(this.linear(inner, m.output, options, rows), this.config.hiddenDropout, options, rows);
    return this.layerNorm(output.add(h) as tf.Tensor2D, m.outputNorm, options);
  }

  /** Final hidden states: [batch*length, hidden], or with firstTokenOnly each sequence's first token's, [batch, hidden]. */
  encode(batch: PaddedBatch, options: ForwardOptions, firstTokenOnly = false): tf.Tensor2D {
    const mask = tf.tensor(batch.attentionMask, [batch.batchSize, 1, 1, batch.length], "int32");
    const maskAdd = tf.scalar(1).sub(mask.cast("float32")).mul(LOWEST_FLOAT32);
    let h = this.embed(batch, options);
    const last = this.config.numLayers - 1;
    if (last < 0) return firstTokenOnly ? firstRowsOf(h, { sequences: batch.batchSize, length: batch.length }) : h;
    // Outside a gradient tape (prediction, evaluation) nothing needs a layer's intermediates once its
    // output exists: each layer runs in its own tidy and the previous output is freed, so the peak
    // holds one layer's activations instead of every layer's.
    const recording = tf.engine().state.gradientDepth > 0;
    const layerStep = (run: () => tf.Tensor2D) => {
      if (recording) return run();
      const previous = h;
      const next = tf.tidy(run);
      previous.dispose();
      return next;
    };
    for (let layer = 0; layer < last; layer++) h = layerStep(() => this.feedForward(this.attention(h, maskAdd, layer, batch, options), layer, options));
    if (!firstTokenOnly) return layerStep(() => this.feedForward(this.attention(h, maskAdd, last, batch, options), last, options));
    return layerStep(() => this.feedForward(this.firstTokenAttention(h, maskAdd, last, batch, options), last, options, { sequences: batch.batchSize, length: batch.length }));
  }

  /** Classification logits, [batch, numLabels]. */
  logits(batch: PaddedBatch, options: ForwardOptions): tf.Tensor2D {
    const first = this.encode(batch, options, true);
    const c = this.config;
    switch (c.architecture) {
      case "distilbert": {
        const pre = tf.relu(this.linear(first, "pre_classifier", options));
        return this.linear(this.dropout(pre, c.classifierDropout, options), "classifier", options);
      }
      case "bert": {
        const pooled = tf.tanh(this.linear(first, "bert.pooler.dense", options));
        return this.linear(this.dropout(pooled, c.classifierDropout, options), "classifier", options);
      }
      case "roberta": {
        const dense = tf.tanh(this.linear(this.dropout(first, c.classifierDropout, options), "classifier.dense", options));
        return this.linear(this.dropout(dense, c.classifierDropout, options), "classifier.out_proj", options);
      }
    }
  }
}
