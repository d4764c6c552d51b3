// GPT2LMHeadModel: learned positions, pre-norm blocks with Conv1D layers (weights stored [in, out]),
// fused q/k/v projection c_attn, the configured activation (gelu_new: the tanh approximation), tied head.
import * as tf from "@tensorflow/tfjs";
import type { CausalConfig } from "./config.ts";
import type { NamedArray } from "../../safetensors.ts";
import { CausalLM, CausalWeightsError, type KVCache, type TokenBatch } from "./model.ts";
import type { LinearModule } from "../../lora.ts";
import { activation, attentionOverRows, layerNorm, rowAttentionAvailable } from "../../layers/fused.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";
import { inPart } from "../../layers/parts.ts";

const PREFIX = "transformer";

/** GPT2Model checkpoints omit the "transformer." prefix; the causal-mask buffers are not parameters. */
export function canonicalGpt2Name(name: string): string | undefined {
  if (/\.attn\.(bias|masked_bias)$/.test(name)) return undefined;
  if (/^(wte|wpe|h|ln_f)\./.test(name)) return `${PREFIX}.${name}`;
  return name;
}

/** Every Conv1D layer of a GPT-2 body with its PEFT in/out features (known from the config alone). */
export function gpt2LinearModules(config: CausalConfig): LinearModule[] {
  const { hiddenSize: h, intermediateSize: inner } = config;
  const out: LinearModule[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `${PREFIX}.h.${layer}`;
    out.push(
      { name: `${p}.attn.c_attn`, inFeatures: h, outFeatures: 3 * h },
      { name: `${p}.attn.c_proj`, inFeatures: h, outFeatures: h },
      { name: `${p}.mlp.c_fc`, inFeatures: h, outFeatures: inner },
      { name: `${p}.mlp.c_proj`, inFeatures: inner, outFeatures: h },
    );
  }
  return out;
}

export class Gpt2LM extends CausalLM {
  static fromCheckpoint(config: CausalConfig, stored: Map<string, NamedArray>): Gpt2LM {
    const weights = new Map<string, tf.Tensor>();
    let lmHead: NamedArray | undefined;
    for (const [name, array] of stored) {
      const canonical = canonicalGpt2Name(name);
      if (canonical === "lm_head.weight") lmHead = array;
      else if (canonical?.startsWith(`${PREFIX}.`)) weights.set(canonical, tf.tensor(array.data, array.shape, "float32"));
      // Consumed: once on the device, the float copy can be collected while the rest loads.
      if (canonical !== "lm_head.weight") stored.delete(name);
    }
    const embedding = weights.get(`${PREFIX}.wte.weight`);
    if (!embedding) throw new CausalWeightsError("the checkpoint holds no GPT-2 weights (transformer.wte.weight)");
    const head = !config.tieWordEmbeddings && lmHead ? tf.tensor2d(lmHead.data, [lmHead.shape[0], lmHead.shape[1]]) : embedding;
    const kernel = tf.tidy(() => (head as tf.Tensor2D).transpose()) as tf.Tensor2D;
    if (head !== embedding) head.dispose();
    return new Gpt2LM(config, weights, kernel);
  }

  linearModules(): LinearModule[] {
    return gpt2LinearModules(this.config);
  }

  private layerNorm(x: tf.Tensor2D, module: string, options: ForwardOptions): tf.Tensor2D {
    return layerNorm(x, this.param(`${module}.weight`, options), this.param(`${module}.bias`, options), this.config.normEps);
  }

  protected embed(batch: TokenBatch, start: number, options: ForwardOptions): tf.Tensor2D {
    const positions = new Int32Array(batch.batchSize * batch.length);
    for (let i = 0; i < positions.length; i++) positions[i] = start + (i % batch.length);
    const sum = tf
      .gather(this.param(`${PREFIX}.wte.weight`, options), tf.tensor1d(batch.ids, "int32"))
      .add(tf.gather(this.param(`${PREFIX}.wpe.weight`, options), tf.tensor1d(positions, "int32"))) as tf.Tensor2D;
    return this.dropout(sum, this.config.embeddingDropout, options);
  }

  protected layerPrefix(layer: number): string {
    return `${PREFIX}.h.${layer}`;
  }

  protected block(h: tf.Tensor2D, layer: number, batch: TokenBatch, _start: number, options: ForwardOptions, cache?: KVCache): tf.Tensor2D {
    const p = this.layerPrefix(layer);
    const { numHeads, headDim } = this.config;
    const { batchSize, length } = batch;
    const qkv = this.linear(this.layerNorm(h, `${p}.ln_1`, options), `${p}.attn.c_attn`, options, true, this.inputNeedsGrad(layer, options));
    let context: tf.Tensor2D;
    if (!cache && rowAttentionAvailable()) {
      // The addon reads the heads of q, k and v by strides straight from the fused qkv rows.
      const rate = this.config.attentionDropout;
      const keep = options.dropout && rate > 0 ? options.dropout.apply(tf.ones([batchSize, numHeads, length, length]), rate) : undefined;
      context = attentionOverRows(qkv, qkv, qkv, { batch: batchSize, heads: numHeads, length, headSize: headDim }, { scale: 1 / Math.sqrt(headDim), causal: true, keep });
    } else {
      const [q, k, v] = inPart("heads split/merge", () => tf.split(qkv, 3, 1).map((x) => x.reshape([batchSize, length, numHeads, headDim]).transpose([0, 2, 1, 3]) as tf.Tensor4D));
      context = this.attend(q, k, v, layer, batch, options, cache);
    }
    const attended = this.dropout(this.linear(context, `${p}.attn.c_proj`, options, true), this.config.residualDropout, options);
    const afterAttention = h.add(attended) as tf.Tensor2D;
    const inner = inPart("gelu", () => activation(this.config.activation, this.linear(this.layerNorm(afterAttention, `${p}.ln_2`, options), `${p}.mlp.c_fc`, options, true))) as tf.Tensor2D;
    const mlp = this.dropout(this.linear(inner, `${p}.mlp.c_proj`, options, true), this.config.residualDropout, options);
    return afterAttention.add(mlp) as tf.Tensor2D;
  }

  protected finalNorm(h: tf.Tensor2D, options: ForwardOptions): tf.Tensor2D {
    return this.layerNorm(h, `${PREFIX}.ln_f`, options);
  }
}
