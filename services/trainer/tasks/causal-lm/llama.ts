// LlamaForCausalLM: RMSNorm, rotary position embeddings (rope_theta, linear or llama3 scaling),
// grouped-query attention, SwiGLU MLP, a tied or separate lm_head. Qwen2ForCausalLM (q/k/v biases) and
// MistralForCausalLM (sliding-window attention, applied by the shared attention mask) are this body too.
import * as tf from "@tensorflow/tfjs";
import type { CausalConfig } from "./config.ts";
import type { NamedArray } from "../../safetensors.ts";
import { transposed, type StoredTensor } from "../../hf/weights.ts";
import type { FrozenLinear } from "../../native/frozen-linear.ts";
import { CausalLM, CausalWeightsError, repeatGroups, type KVCache, type TokenBatch } from "./model.ts";
import type { LinearModule } from "../../lora.ts";
import { activation, attentionOverRows, rmsNorm, rowAttentionAvailable, siluGate } from "../../layers/fused.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";

const PREFIX = "model";
const LINEAR = /\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$/;

/** Whether a (canonical) tensor name is the weight of a linear layer, which may be held by the addon. */
export function isLlamaLinear(canonicalName: string): boolean {
  return LINEAR.test(canonicalName);
}

/** LlamaModel checkpoints omit the "model." prefix; rotary inv_freq buffers are not parameters. */
export function canonicalLlamaName(name: string): string | undefined {
  if (name.endsWith("rotary_emb.inv_freq")) return undefined;
  if (/^(embed_tokens|layers|norm)\./.test(name)) return `${PREFIX}.${name}`;
  return name;
}

/** Rotary inverse frequencies as transformers computes them (in float32), with the configured scaling. */
export function inverseFrequencies(config: CausalConfig): Float32Array {
  const dim = config.headDim;
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / config.ropeTheta ** Math.fround((2 * i) / dim);
  const scaling = config.ropeScaling;
  if (scaling.type === "linear") for (let i = 0; i < out.length; i++) out[i] = out[i] / scaling.factor;
  if (scaling.type === "llama3") {
    const { factor, lowFreqFactor, highFreqFactor, originalMaxPositions } = scaling;
    const lowFreqWavelength = originalMaxPositions / lowFreqFactor;
    const highFreqWavelength = originalMaxPositions / highFreqFactor;
    for (let i = 0; i < out.length; i++) {
      const wavelength = (2 * Math.PI) / out[i];
      if (wavelength > lowFreqWavelength) out[i] = out[i] / factor;
      else if (wavelength >= highFreqWavelength) {
        const smooth = (originalMaxPositions / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        out[i] = (1 - smooth) * (out[i] / factor) + smooth * out[i];
      }
    }
  }
  return out;
}

/** Every linear layer of a Llama-like body with its PEFT in/out features (known from the config alone). */
export function llamaLinearModules(config: CausalConfig): LinearModule[] {
  const { hiddenSize: h, intermediateSize: inner, numHeads, numKeyValueHeads, headDim } = config;
  const out: LinearModule[] = [];
  for (let layer = 0; layer < config.numLayers; layer++) {
    const p = `${PREFIX}.layers.${layer}`;
    out.push(
      { name: `${p}.self_attn.q_proj`, inFeatures: h, outFeatures: numHeads * headDim },
      { name: `${p}.self_attn.k_proj`, inFeatures: h, outFeatures: numKeyValueHeads * headDim },
      { name: `${p}.self_attn.v_proj`, inFeatures: h, outFeatures: numKeyValueHeads * headDim },
      { name: `${p}.self_attn.o_proj`, inFeatures: numHeads * headDim, outFeatures: h },
      { name: `${p}.mlp.gate_proj`, inFeatures: h, outFeatures: inner },
      { name: `${p}.mlp.up_proj`, inFeatures: h, outFeatures: inner },
      { name: `${p}.mlp.down_proj`, inFeatures: inner, outFeatures: h },
    );
  }
  return out;
}

export class LlamaLM extends CausalLM {
  private readonly inverseFrequency: Float32Array;

  private constructor(config: CausalConfig, weights: Map<string, tf.Tensor>, lmHeadKernel: tf.Tensor2D, frozen: Map<string, FrozenLinear>) {
    super(config, weights, lmHeadKernel, frozen);
    this.inverseFrequency = inverseFrequencies(config);
  }

  static fromCheckpoint(config: CausalConfig, stored: Map<string, StoredTensor>): LlamaLM {
    if (config.numHeads % config.numKeyValueHeads !== 0) throw new CausalWeightsError("num_attention_heads must be a multiple of num_key_value_heads");
    const weights = new Map<string, tf.Tensor>();
    const frozen = new Map<string, FrozenLinear>();
    let lmHead: NamedArray | undefined;
    for (const [name, array] of stored) {
      const canonical = canonicalLlamaName(name);
      if (canonical === "lm_head.weight") lmHead = array;
      else if (canonical && array.frozen) frozen.set(canonical, array.frozen);
      else if (canonical && LINEAR.test(canonical)) weights.set(canonical, transposed(array));
      else if (canonical?.startsWith(`${PREFIX}.`)) weights.set(canonical, tf.tensor(array.data, array.shape, "float32"));
      // Consumed: once on the device, the float copy can be collected while the rest loads.
      if (canonical !== "lm_head.weight") stored.delete(name);
    }
    const embedding = weights.get(`${PREFIX}.embed_tokens.weight`);
    if (!embedding) throw new CausalWeightsError("the checkpoint holds no Llama weights (model.embed_tokens.weight)");
    let kernel: tf.Tensor2D;
    if (config.tieWordEmbeddings) kernel = tf.tidy(() => (embedding as tf.Tensor2D).transpose());
    else if (lmHead) kernel = transposed(lmHead);
    else throw new CausalWeightsError("tie_word_embeddings is false but the checkpoint has no lm_head.weight");
    return new LlamaLM(config, weights, kernel, frozen);
  }

  linearModules(): LinearModule[] {
    return llamaLinearModules(this.config);
  }

  /** x · rsqrt(mean(x²) + eps) · weight, as LlamaRMSNorm. */
  private rmsNorm(x: tf.Tensor2D, module: string, options: ForwardOptions): tf.Tensor2D {
    return rmsNorm(x, this.param(`${module}.weight`, options), this.config.normEps);
  }

  /** cos and sin tables [length, headDim] for positions start..start+length-1 (halves repeated, as HF concatenates freqs twice). */
  private rotaryTables(start: number, length: number): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
    const dim = this.config.headDim;
    const half = dim / 2;
    const cos = new Float32Array(length * dim);
    const sin = new Float32Array(length * dim);
    for (let t = 0; t < length; t++) {
      for (let i = 0; i < half; i++) {
        const angle = Math.fround((start + t) * this.inverseFrequency[i]);
        cos[t * dim + i] = cos[t * dim + half + i] = Math.cos(angle);
        sin[t * dim + i] = sin[t * dim + half + i] = Math.sin(angle);
      }
    }
    return { cos: tf.tensor2d(cos, [length, dim]), sin: tf.tensor2d(sin, [length, dim]) };
  }

  /** Rotary embedding of x [·, ·, ·, headDim] by cos and sin tables broadcast against it. */
  private rotate(x: tf.Tensor4D, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor4D {
    const half = this.config.headDim / 2;
    const [first, second] = tf.split(x, [half, half], 3);
    const rotated = tf.concat([second.neg(), first], 3);
    return x.mul(cos).add(rotated.mul(sin)) as tf.Tensor4D;
  }

  /** [rows, kvHeads·headDim] → [rows, heads·headDim], each key/value head repeated for its query group (HF repeat_kv). */
  private repeatKeyValueRows(x: tf.Tensor2D): tf.Tensor2D {
    const { numHeads, numKeyValueHeads, headDim } = this.config;
    const groups = numHeads / numKeyValueHeads;
    const rows = x.shape[0];
    return groups === 1 ? x : (repeatGroups(x.reshape([rows, numKeyValueHeads, 1, headDim]) as tf.Tensor4D, groups).reshape([rows, numHeads * headDim]) as tf.Tensor2D);
  }

  protected embed(batch: TokenBatch, _start: number, options: ForwardOptions): tf.Tensor2D {
    return tf.gather(this.param(`${PREFIX}.embed_tokens.weight`, options), tf.tensor1d(batch.ids, "int32")) as tf.Tensor2D;
  }

  protected layerPrefix(layer: number): string {
    return `${PREFIX}.layers.${layer}`;
  }

  protected block(h: tf.Tensor2D, layer: number, batch: TokenBatch, start: number, options: ForwardOptions, cache?: KVCache): tf.Tensor2D {
    const p = this.layerPrefix(layer);
    const { numHeads, numKeyValueHeads, headDim, attentionBias, outputBias, mlpBias } = this.config;
    const { batchSize, length } = batch;
    const normed = this.rmsNorm(h, `${p}.input_layernorm`, options);
    const { cos, sin } = this.rotaryTables(start, length);
    const qRows = this.linear(normed, `${p}.self_attn.q_proj`, options, attentionBias);
    const kRows = this.linear(normed, `${p}.self_attn.k_proj`, options, attentionBias);
    const vRows = this.linear(normed, `${p}.self_attn.v_proj`, options, attentionBias);
    let context: tf.Tensor2D;
    if (!cache && rowAttentionAvailable() && (this.config.layerWindows[layer] ?? Infinity) >= length) {
      // The addon's attention reads the heads by strides from the rows, with rotary embedding applied
      // to the rows and the key/value heads repeated along them for grouped-query attention.
      const rows = (x: tf.Tensor2D, count: number) => x.reshape([batchSize, length, count, headDim]) as tf.Tensor4D;
      const rowTable = (table: tf.Tensor2D) => table.reshape([1, length, 1, headDim]) as tf.Tensor4D;
      const q = this.rotate(rows(qRows, numHeads), rowTable(cos), rowTable(sin)).reshape([batchSize * length, numHeads * headDim]) as tf.Tensor2D;
      const k = this.rotate(rows(kRows, numKeyValueHeads), rowTable(cos), rowTable(sin)).reshape([batchSize * length, numKeyValueHeads * headDim]) as tf.Tensor2D;
      const rate = this.config.attentionDropout;
      const keep = options.dropout && rate > 0 ? options.dropout.apply(tf.ones([batchSize, numHeads, length, length]), rate) : undefined;
      const layout = { batch: batchSize, heads: numHeads, length, headSize: headDim };
      context = attentionOverRows(q, this.repeatKeyValueRows(k), this.repeatKeyValueRows(vRows), layout, { scale: 1 / Math.sqrt(headDim), causal: true, keep });
    } else {
      const heads = (x: tf.Tensor2D, count: number) => x.reshape([batchSize, length, count, headDim]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
      const q = this.rotate(heads(qRows, numHeads), cos, sin);
      const k = this.rotate(heads(kRows, numKeyValueHeads), cos, sin);
      context = this.attend(q, k, heads(vRows, numKeyValueHeads), layer, batch, options, cache);
    }
    const afterAttention = h.add(this.linear(context, `${p}.self_attn.o_proj`, options, outputBias)) as tf.Tensor2D;
    const m = this.rmsNorm(afterAttention, `${p}.post_attention_layernorm`, options);
    const gate = this.linear(m, `${p}.mlp.gate_proj`, options, mlpBias);
    const up = this.linear(m, `${p}.mlp.up_proj`, options, mlpBias);
    const swiGlu = this.config.activation === "silu" || this.config.activation === "swish";
    const gated = swiGlu ? siluGate(gate, up) : (activation(this.config.activation, gate).mul(up) as tf.Tensor2D);
    return afterAttention.add(this.linear(gated, `${p}.mlp.down_proj`, options, mlpBias)) as tf.Tensor2D;
  }

  protected finalNorm(h: tf.Tensor2D, options: ForwardOptions): tf.Tensor2D {
    return this.rmsNorm(h, `${PREFIX}.norm`, options);
  }
}
