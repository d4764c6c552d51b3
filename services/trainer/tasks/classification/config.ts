// Reads a Hugging Face encoder config.json into the few numbers the forward pass needs.
import { ModelConfigError, readModelConfigJson } from "../../hf/config.ts";

export type Architecture = "distilbert" | "bert" | "roberta";

export interface EncoderConfig {
  architecture: Architecture;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenAct: string;
  hiddenDropout: number;
  attentionDropout: number;
  classifierDropout: number;
  padTokenId: number;
  initializerRange: number;
  /** Labels by id when the checkpoint carries a classification head. */
  labels?: string[];
  hasClassificationHead: boolean;
  raw: Record<string, unknown>;
}

const CLASS_NAMES: Record<Architecture, string> = {
  distilbert: "DistilBert",
  bert: "Bert",
  roberta: "Roberta",
};

export function sequenceClassificationClass(architecture: Architecture): string {
  return `${CLASS_NAMES[architecture]}ForSequenceClassification`;
}

function detectArchitecture(raw: Record<string, unknown>): Architecture {
  const modelType = String(raw.model_type ?? "").toLowerCase();
  if (modelType === "distilbert" || modelType === "bert" || modelType === "roberta") return modelType;
  const declared = Array.isArray(raw.architectures) ? String(raw.architectures[0] ?? "") : "";
  for (const [architecture, className] of Object.entries(CLASS_NAMES) as [Architecture, string][]) {
    if (declared.startsWith(className)) return architecture;
  }
  throw new ModelConfigError(`unsupported model: model_type "${modelType}" (supported: distilbert, bert, roberta)`);
}

function number(raw: Record<string, unknown>, key: string, fallback?: number): number {
  const value = raw[key];
  if (typeof value === "number") return value;
  if (fallback !== undefined) return fallback;
  throw new ModelConfigError(`config.json lacks "${key}"`);
}

function labelsOf(raw: Record<string, unknown>): string[] | undefined {
  const id2label = raw.id2label as Record<string, string> | undefined;
  if (!id2label || typeof id2label !== "object") return undefined;
  const entries = Object.entries(id2label).map(([id, label]) => [Number(id), String(label)] as const);
  entries.sort((a, b) => a[0] - b[0]);
  if (entries.some(([id], index) => id !== index)) throw new ModelConfigError("config.json id2label ids must be 0..n-1");
  return entries.map(([, label]) => label);
}

export function parseEncoderConfig(raw: Record<string, unknown>): EncoderConfig {
  const architecture = detectArchitecture(raw);
  const declared = Array.isArray(raw.architectures) ? String(raw.architectures[0] ?? "") : "";
  const hasClassificationHead = declared.endsWith("ForSequenceClassification");
  const labels = hasClassificationHead ? labelsOf(raw) : undefined;
  if (architecture === "distilbert") {
    const hidden = number(raw, "dim");
    return {
      architecture,
      hiddenSize: hidden,
      numLayers: number(raw, "n_layers"),
      numHeads: number(raw, "n_heads"),
      intermediateSize: number(raw, "hidden_dim"),
      maxPositions: number(raw, "max_position_embeddings"),
      typeVocabSize: 0,
      // DistilBERT's LayerNorms are built with a fixed eps in Hugging Face's code.
      layerNormEps: 1e-12,
      hiddenAct: String(raw.activation ?? "gelu"),
      hiddenDropout: number(raw, "dropout", 0.1),
      attentionDropout: number(raw, "attention_dropout", 0.1),
      classifierDropout: number(raw, "seq_classif_dropout", 0.2),
      padTokenId: number(raw, "pad_token_id", 0),
      initializerRange: number(raw, "initializer_range", 0.02),
      labels,
      hasClassificationHead,
      raw,
    };
  }
  const hiddenDropout = number(raw, "hidden_dropout_prob", 0.1);
  const classifierDropout = raw.classifier_dropout == null ? hiddenDropout : number(raw, "classifier_dropout");
  return {
    architecture,
    hiddenSize: number(raw, "hidden_size"),
    numLayers: number(raw, "num_hidden_layers"),
    numHeads: number(raw, "num_attention_heads"),
    intermediateSize: number(raw, "intermediate_size"),
    maxPositions: number(raw, "max_position_embeddings"),
    typeVocabSize: number(raw, "type_vocab_size", 2),
    layerNormEps: number(raw, "layer_norm_eps", 1e-12),
    hiddenAct: String(raw.hidden_act ?? "gelu"),
    hiddenDropout,
    attentionDropout: number(raw, "attention_probs_dropout_prob", 0.1),
    classifierDropout,
    padTokenId: number(raw, "pad_token_id", architecture === "roberta" ? 1 : 0),
    initializerRange: number(raw, "initializer_range", 0.02),
    labels,
    hasClassificationHead,
    raw,
  };
}

export async function readEncoderConfig(modelDir: string): Promise<EncoderConfig> {
  return parseEncoderConfig(await readModelConfigJson(modelDir));
}

/** Longest input the position table allows; RoBERTa's positions start after padding_idx. */
export function maxInputLength(config: EncoderConfig): number {
  return config.architecture === "roberta" ? config.maxPositions - config.padTokenId - 1 : config.maxPositions;
}
