// Memory a training run will need, planned from config.json and the job's settings before anything
// loads, so that a job that cannot fit is refused at submission instead of dying mid-run. Pure: the
// API plans with it (GET /v1/models, POST /v1/jobs, POST /v1/jobs/estimate) and the engine checks
// the wasm heap with it. Every term and constant is documented in services/trainer/README.md.
import { parseCausalConfig, causalFamilyOf, type CausalConfig } from "./tasks/causal-lm/config.ts";
import { gpt2LinearModules } from "./tasks/causal-lm/gpt2.ts";
import { llamaLinearModules } from "./tasks/causal-lm/llama.ts";
import { parseEncoderConfig } from "./tasks/classification/config.ts";
import { encoderLinearModules, layerModules } from "./tasks/classification/encoder.ts";
import { matchTargetModules, type LinearModule } from "./lora.ts";
import type { GradientCheckpointing } from "./settings.ts";
import { WASM32_MAX_BYTES, WASM_STATIC_BYTES } from "./wasm-heap.ts";

/** How the frozen linear weights are held: float32 as the engine computes ("none"), or quantized. */
export const WEIGHT_STORAGE_MODES = ["none", "int8", "nf4"] as const;
export type WeightStorage = (typeof WEIGHT_STORAGE_MODES)[number];

const FLOAT32 = 4;
/** int8: one byte a weight plus a float32 scale per output channel. */
const INT8_SCALE_BYTES_PER_CHANNEL = FLOAT32;
/** nf4: half a byte a weight plus a float32 absmax per block of 64 weights (bitsandbytes' blocksize). */
export const NF4_BLOCK = 64;
/** Double quantization: the absmax values stored as 8 bits, with a float32 scale per 256 of them. */
export const NF4_DOUBLE_QUANT_GROUP = 256;
/**
 * Float32 values alive per token per layer at a training step's peak, by width: `hidden` × hidden size +
 * `intermediate` × intermediate size + `score` × heads × sequence length; and `logits` copies of the
 * logits per predicted row (causal LMs). The tape keeps every intermediate of the forward pass and the
 * backward adds their gradients. Fitted to tf.profile's peak tensor bytes of training steps on the wasm
 * backend, as services/trainer/README.md ("Memory planning") records: with the addon's fused kernels
 * (attention read by strides keeping one copy of the probabilities, layer norm, GELU, row-wise
 * cross-entropy) per decoder family, and with plain tfjs ops (no addon) on a Llama body; encoders on a
 * DistilBERT body with its fused attention and first-token last layer.
 */
export const ACTIVATION_FLOATS = {
  llama_fused: { hidden: 96, intermediate: 12, score: 2, logits: 4 },
  gpt2_fused: { hidden: 26, intermediate: 5, score: 2, logits: 4 },
  causal_plain: { hidden: 96, intermediate: 12, score: 8, logits: 12 },
  classification: { hidden: 48, intermediate: 6, score: 4, logits: 0 },
} as const;
/** Node, V8, the tensorflow.js runtime and the tokenizer, measured at rest; plus slack for heap fragmentation. */
export const RUNTIME_OVERHEAD_BYTES = 256 * 1024 * 1024;
export const FRAGMENTATION = 0.1;
/**
 * gradientCheckpointing "auto" turns on for a causal LM whose step would not fit the wasm heap without
 * it: the weights held there, the LoRA state and every layer's activations, with fragmentation slack.
 */
export const WASM_HEAP_BUDGET = (WASM32_MAX_BYTES - WASM_STATIC_BYTES) / (1 + FRAGMENTATION);

/** The parameters of a model as the engine holds them: linear layers by shape, everything else counted. */
export interface ModelParameters {
  kind: "causal_lm" | "classification";
  /** The decoder family (gpt2, llama, qwen2, mistral), or "encoder". */
  family: string;
  linears: LinearModule[];
  /** Embeddings, the output head (a float32 copy even when tied), norms, biases, positions. */
  otherParameters: number;
  /** Parameters in the checkpoint (the folder holds these; tied heads once). */
  checkpointParameters: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  vocab: number;
}

const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
const linearWeights = (linears: LinearModule[]) => sum(linears.map(({ inFeatures, outFeatures }) => inFeatures * outFeatures));

function causalParameters(config: CausalConfig): ModelParameters {
  const linears = config.family === "gpt2" ? gpt2LinearModules(config) : llamaLinearModules(config);
  const { hiddenSize: h, intermediateSize: inner, numLayers: layers, vocabSize: vocab } = config;
  const qDim = config.numHeads * config.headDim;
  const kvDim = config.numKeyValueHeads * config.headDim;
  let perLayer: number;
  let fixed = vocab * h + h;
  if (config.family === "gpt2") {
    perLayer = 4 * h + 3 * h + h + inner + h;
    fixed += config.maxPositions * h + h;
  } else {
    perLayer = 2 * h + (config.attentionBias ? qDim + 2 * kvDim : 0) + (config.outputBias ? h : 0) + (config.mlpBias ? 2 * inner + h : 0);
  }
  const head = vocab * h;
  const body = linearWeights(linears) + perLayer * layers + fixed;
  return {
    kind: "causal_lm", family: config.family, linears, otherParameters: perLayer * layers + fixed + head, checkpointParameters: body + (config.tieWordEmbeddings ? 0 : head),
    hidden: h, intermediate: inner, layers, heads: config.numHeads, vocab,
  };
}

function encoderParameters(raw: Record<string, unknown>): ModelParameters {
  const config = parseEncoderConfig(raw);
  const { hiddenSize: h, intermediateSize: inner, numLayers: layers } = config;
  const shapes = new Map<string, [number, number]>();
  for (let layer = 0; layer < layers; layer++) {
    const m = layerModules(config, layer);
    for (const name of [m.query, m.key, m.value, m.attentionOutput]) shapes.set(name, [h, h]);
    shapes.set(m.intermediate, [h, inner]);
    shapes.set(m.output, [inner, h]);
  }
  const linears = encoderLinearModules(config).map((name) => ({ name, inFeatures: shapes.get(name)![0], outFeatures: shapes.get(name)![1] }));
  const vocab = typeof raw.vocab_size === "number" ? raw.vocab_size : 30522;
  // Biases of the six linears and two layer norms a layer; embeddings with their norm; pooler / pre-classifier and a head.
  const perLayer = 5 * h + inner + 4 * h;
  const other = perLayer * layers + (vocab + config.maxPositions + config.typeVocabSize) * h + 2 * h + h * h + h + 2 * h + 2;
  return {
    kind: "classification", family: "encoder", linears, otherParameters: other, checkpointParameters: linearWeights(linears) + other,
    hidden: h, intermediate: inner, layers, heads: config.numHeads, vocab,
  };
}

/** The parameters of a Hugging Face config.json (decoders and encoders the engine trains). */
export function modelParameters(raw: Record<string, unknown>): ModelParameters {
  return causalFamilyOf(raw) ? causalParameters(parseCausalConfig(raw)) : encoderParameters(raw);
}

/** Bytes of the frozen weights as held during training: quantized linears, everything else float32. */
export function frozenWeightBytes(model: ModelParameters, storage: WeightStorage, doubleQuant = false): number {
  const other = model.otherParameters * FLOAT32;
  const weights = linearWeights(model.linears);
  switch (storage) {
    case "none":
      return weights * FLOAT32 + other;
    case "int8":
      return weights + sum(model.linears.map((linear) => linear.outFeatures)) * INT8_SCALE_BYTES_PER_CHANNEL + other;
    case "nf4": {
      const blocks = sum(model.linears.map(({ inFeatures, outFeatures }) => Math.ceil((inFeatures * outFeatures) / NF4_BLOCK)));
      const absmax = doubleQuant ? blocks + Math.ceil(blocks / NF4_DOUBLE_QUANT_GROUP) * FLOAT32 : blocks * FLOAT32;
      return Math.ceil(weights / 2) + absmax + other;
    }
  }
}

export interface MemoryPlanRequest {
  r: number;
  targetModules: string[];
  batchSize: number;
  maxSeqLength: number;
  storage: WeightStorage;
  doubleQuant?: boolean;
  /** Absent: "auto". */
  gradientCheckpointing?: GradientCheckpointing;
  /** Whether the worker runs the addon (fused kernels, Llama linears outside the wasm heap); absent: true, as scripts/setup.sh builds it. */
  nativeKernels?: boolean;
}

export interface MemoryPlan {
  /** The peak: the larger of loading and training, with runtime overhead and fragmentation slack. */
  bytes: number;
  storage: WeightStorage;
  weightsBytes: number;
  trainableParameters: number;
  /** LoRA A and B with their gradients and AdamW's two moments: 4 float32 copies. */
  trainableBytes: number;
  activationBytes: number;
  /** Whether decoder layers are recomputed in the backward (the setting, with "auto" decided). */
  gradientCheckpointing: boolean;
  /** While loading, the checkpoint decoded to float32 beside the weights being stored. */
  loadingBytes: number;
  overheadBytes: number;
}

/**
 * The memory plan of a training run. Training holds the frozen weights, the LoRA state and one
 * micro-batch's activations; loading briefly holds the whole checkpoint decoded to float32 beside the
 * stored weights. The peak of the two, plus 10% fragmentation slack and the runtime's fixed overhead.
 */
export function planTrainingMemory(raw: Record<string, unknown>, request: MemoryPlanRequest): MemoryPlan {
  const model = modelParameters(raw);
  const weightsBytes = frozenWeightBytes(model, request.storage, request.doubleQuant);
  const byName = new Map(model.linears.map((linear) => [linear.name, linear]));
  const targeted = matchTargetModules([...byName.keys()], request.targetModules).map((name) => byName.get(name)!);
  const trainableParameters = sum(targeted.map(({ inFeatures, outFeatures }) => request.r * (inFeatures + outFeatures)));
  const trainableBytes = trainableParameters * FLOAT32 * 4;
  const tokens = request.batchSize * request.maxSeqLength;
  const native = request.nativeKernels ?? true;
  const floats = ACTIVATION_FLOATS[model.kind === "classification" ? "classification" : !native ? "causal_plain" : model.family === "gpt2" ? "gpt2_fused" : "llama_fused"];
  const perToken = floats.hidden * model.hidden + floats.intermediate * model.intermediate + floats.score * model.heads * request.maxSeqLength;
  const logits = tokens * model.vocab * floats.logits;
  const keptEverywhere = (tokens * perToken * model.layers + logits) * FLOAT32;
  // Checkpointed: every layer's input, plus one layer's intermediates and gradients while it is recomputed.
  const checkpointedBytes = (tokens * (model.hidden * model.layers + perToken) + logits) * FLOAT32;
  // The addon holds a Llama-family decoder's linear weights outside the wasm heap; everything else is in it.
  const heapWeights = native && model.kind === "causal_lm" && model.family !== "gpt2" ? model.otherParameters * FLOAT32 : frozenWeightBytes(model, "none");
  const setting = request.gradientCheckpointing ?? "auto";
  const wouldOverflow = heapWeights + trainableBytes + keptEverywhere > WASM_HEAP_BUDGET;
  const gradientCheckpointing = model.kind === "causal_lm" && (setting === "on" || (setting === "auto" && wouldOverflow));
  const activationBytes = gradientCheckpointing ? checkpointedBytes : keptEverywhere;
  const loadingBytes = model.checkpointParameters * FLOAT32;
  const working = Math.max(weightsBytes + trainableBytes + activationBytes, weightsBytes + loadingBytes);
  const overheadBytes = Math.round(working * FRAGMENTATION) + RUNTIME_OVERHEAD_BYTES;
  return { bytes: working + overheadBytes, storage: request.storage, weightsBytes, trainableParameters, trainableBytes, activationBytes, gradientCheckpointing, loadingBytes, overheadBytes };
}
