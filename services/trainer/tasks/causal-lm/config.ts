// Reads a Hugging Face decoder config.json (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM,
// MistralForCausalLM) into the numbers the causal forward pass needs. Defaults are the ones
// transformers' GPT2Config, LlamaConfig, Qwen2Config and MistralConfig use. Qwen2 and Mistral are the
// Llama body with q/k/v biases (Qwen2) and sliding-window attention (Mistral; Qwen2 when enabled).
import { ModelConfigError, readModelConfigJson } from "../../hf/config.ts";

export type CausalFamily = "gpt2" | "llama" | "qwen2" | "mistral";

/** Rotary scaling types this engine implements (transformers' rope_type names). */
export type RopeScaling =
  | { type: "default" }
  | { type: "linear"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

export interface CausalConfig {
  family: CausalFamily;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  normEps: number;
  activation: string;
  tieWordEmbeddings: boolean;
  /** Llama only. */
  ropeTheta: number;
  ropeScaling: RopeScaling;
  /** Biases of q_proj, k_proj, v_proj (Llama attention_bias; always on Qwen2). */
  attentionBias: boolean;
  /** Bias of o_proj (Llama attention_bias; never on Qwen2). */
  outputBias: boolean;
  mlpBias: boolean;
  /**
   * Per layer, the sliding attention window (a query at position i sees keys j with i - window < j ≤ i,
   * transformers' sliding_window_overlay), or null for full causal attention.
   */
  layerWindows: (number | null)[];
  /** GPT-2 only: embedding, attention-probability and residual dropout. */
  embeddingDropout: number;
  attentionDropout: number;
  residualDropout: number;
  bosTokenId?: number;
  eosTokenIds: number[];
  padTokenId?: number;
  raw: Record<string, unknown>;
}

function declaredClass(raw: Record<string, unknown>): string {
  return Array.isArray(raw.architectures) ? String(raw.architectures[0] ?? "") : "";
}

/** The decoder family of a config, or undefined for any other model (e.g. an encoder). */
export function causalFamilyOf(raw: Record<string, unknown>): CausalFamily | undefined {
  const modelType = String(raw.model_type ?? "").toLowerCase();
  const declared = declaredClass(raw);
  if (modelType === "gpt2" || declared.startsWith("GPT2")) return "gpt2";
  if (modelType === "llama" || declared.startsWith("Llama")) return "llama";
  if (modelType === "qwen2" || declared.startsWith("Qwen2ForCausalLM") || declared === "Qwen2Model") return "qwen2";
  if (modelType === "mistral" || declared.startsWith("Mistral")) return "mistral";
  return undefined;
}

function number(raw: Record<string, unknown>, key: string, fallback?: number): number {
  const value = raw[key];
  if (typeof value === "number") return value;
  if (value == null && fallback !== undefined) return fallback;
  throw new ModelConfigError(`config.json lacks a numeric "${key}"`);
}

function optionalId(raw: Record<string, unknown>, key: string): number | undefined {
  const value = raw[key];
  return typeof value === "number" ? value : undefined;
}

function idList(raw: Record<string, unknown>, key: string): number[] {
  const value = raw[key];
  if (typeof value === "number") return [value];
  if (Array.isArray(value)) return value.filter((id): id is number => typeof id === "number");
  return [];
}

function parseRopeScaling(raw: Record<string, unknown>): RopeScaling {
  const scaling = raw.rope_scaling as Record<string, unknown> | null | undefined;
  if (!scaling) return { type: "default" };
  // transformers renamed "type" to "rope_type" and still reads the old key.
  const type = String(scaling.rope_type ?? scaling.type ?? "default");
  const factor = number(scaling, "factor", 1);
  switch (type) {
    case "default":
      return { type: "default" };
    case "linear":
      return { type: "linear", factor };
    case "llama3":
      return {
        type: "llama3",
        factor,
        lowFreqFactor: number(scaling, "low_freq_factor"),
        highFreqFactor: number(scaling, "high_freq_factor"),
        originalMaxPositions: number(scaling, "original_max_position_embeddings"),
      };
    default:
      throw new ModelConfigError(`rope_scaling type "${type}" is not supported (default, linear, llama3)`);
  }
}

/** transformers' defaults where the Llama-like configs differ. */
const LLAMA_LIKE_DEFAULTS: Record<Exclude<CausalFamily, "gpt2">, { vocab: number; layers: number; intermediate: number; positions: number; kvHeads?: number }> = {
  llama: { vocab: 32000, layers: 32, intermediate: 11008, positions: 2048 },
  qwen2: { vocab: 151936, layers: 32, intermediate: 22016, positions: 32768, kvHeads: 32 },
  mistral: { vocab: 32000, layers: 32, intermediate: 14336, positions: 4096 * 32, kvHeads: 8 },
};

function windowSize(raw: Record<string, unknown>, fallback: number | null): number | null {
  const value = raw.sliding_window === undefined ? fallback : raw.sliding_window;
  if (value === null) return null;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) throw new ModelConfigError(`config.json "sliding_window" must be a positive integer or null`);
  return value;
}

/**
 * Which layers slide, as transformers decides: an explicit `layer_types` list; else Mistral slides every
 * layer when sliding_window is set (4096 by default); Qwen2 only with use_sliding_window, from layer
 * max_window_layers on; Llama never.
 */
function layerWindows(raw: Record<string, unknown>, family: CausalFamily, layers: number): (number | null)[] {
  if (family === "llama") return new Array<null>(layers).fill(null);
  let window: number | null;
  let firstSliding = 0;
  if (family === "mistral") window = windowSize(raw, 4096);
  else {
    window = raw.use_sliding_window === true ? windowSize(raw, 4096) : null;
    firstSliding = number(raw, "max_window_layers", 28);
  }
  if (Array.isArray(raw.layer_types) && window !== null) {
    if (raw.layer_types.length !== layers) throw new ModelConfigError(`config.json "layer_types" must name ${layers} layers`);
    return raw.layer_types.map((type) => (type === "sliding_attention" ? window : null));
  }
  return Array.from({ length: layers }, (_, layer) => (window !== null && layer >= firstSliding ? window : null));
}

export function parseCausalConfig(raw: Record<string, unknown>): CausalConfig {
  const family = causalFamilyOf(raw);
  if (!family) throw new ModelConfigError(`unsupported causal model: model_type "${String(raw.model_type)}" (supported: gpt2, llama, qwen2, mistral)`);
  if (family === "gpt2") {
    const hidden = number(raw, "n_embd", 768);
    const heads = number(raw, "n_head", 12);
    if (raw.scale_attn_by_inverse_layer_idx === true || raw.reorder_and_upcast_attn === true) {
      throw new ModelConfigError("GPT-2 variants with scale_attn_by_inverse_layer_idx or reorder_and_upcast_attn are not supported");
    }
    return {
      family,
      vocabSize: number(raw, "vocab_size", 50257),
      hiddenSize: hidden,
      numLayers: number(raw, "n_layer", 12),
      numHeads: heads,
      numKeyValueHeads: heads,
      headDim: hidden / heads,
      intermediateSize: number(raw, "n_inner", 4 * hidden),
      maxPositions: number(raw, "n_positions", 1024),
      normEps: number(raw, "layer_norm_epsilon", 1e-5),
      activation: String(raw.activation_function ?? "gelu_new"),
      tieWordEmbeddings: raw.tie_word_embeddings !== false,
      ropeTheta: 0,
      ropeScaling: { type: "default" },
      attentionBias: true,
      outputBias: true,
      mlpBias: true,
      layerWindows: [],
      embeddingDropout: number(raw, "embd_pdrop", 0.1),
      attentionDropout: number(raw, "attn_pdrop", 0.1),
      residualDropout: number(raw, "resid_pdrop", 0.1),
      bosTokenId: optionalId(raw, "bos_token_id") ?? 50256,
      eosTokenIds: idList(raw, "eos_token_id").length ? idList(raw, "eos_token_id") : [50256],
      padTokenId: optionalId(raw, "pad_token_id"),
      raw,
    };
  }
  const defaults = LLAMA_LIKE_DEFAULTS[family];
  const hidden = number(raw, "hidden_size", 4096);
  const heads = number(raw, "num_attention_heads", 32);
  const headDim = number(raw, "head_dim", hidden / heads);
  const layers = number(raw, "num_hidden_layers", defaults.layers);
  const attentionBias = family === "qwen2" || raw.attention_bias === true;
  return {
    family,
    vocabSize: number(raw, "vocab_size", defaults.vocab),
    hiddenSize: hidden,
    numLayers: layers,
    numHeads: heads,
    numKeyValueHeads: number(raw, "num_key_value_heads", defaults.kvHeads ?? heads),
    headDim,
    intermediateSize: number(raw, "intermediate_size", defaults.intermediate),
    maxPositions: number(raw, "max_position_embeddings", defaults.positions),
    normEps: number(raw, "rms_norm_eps", 1e-6),
    activation: String(raw.hidden_act ?? "silu"),
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    ropeTheta: number(raw, "rope_theta", 10000),
    ropeScaling: parseRopeScaling(raw),
    attentionBias,
    outputBias: family !== "qwen2" && attentionBias,
    mlpBias: raw.mlp_bias === true,
    layerWindows: layerWindows(raw, family, layers),
    embeddingDropout: 0,
    attentionDropout: number(raw, "attention_dropout", 0),
    residualDropout: 0,
    bosTokenId: optionalId(raw, "bos_token_id"),
    eosTokenIds: idList(raw, "eos_token_id"),
    padTokenId: optionalId(raw, "pad_token_id"),
    raw,
  };
}

export async function readCausalConfig(modelDir: string): Promise<CausalConfig> {
  return parseCausalConfig(await readModelConfigJson(modelDir));
}
