// Loads a Hugging Face decoder folder: config.json, model.safetensors (or shards), tokenizer.json and
// tokenizer_config.json (chat template, BOS/EOS).
import { existsSync } from "node:fs";
import path from "node:path";
import { ChatFormatter } from "./chat-template.ts";
import { ModelConfigError } from "../../hf/config.ts";
import { readCausalConfig, type CausalConfig } from "./config.ts";
import { TextTokenizer } from "../../tokenizer.ts";
import type { CausalLM } from "./model.ts";
import { Gpt2LM } from "./gpt2.ts";
import { canonicalLlamaName, isLlamaLinear, LlamaLM } from "./llama.ts";
import { readCheckpoint, type Freeze } from "../../hf/weights.ts";
import { frozenWeightBytes, modelParameters } from "../../memory-plan.ts";
import { createFrozenLinear, FrozenStorageError, frozenStorageAvailable, requireFrozenStorage } from "../../native/frozen-linear.ts";
import type { Quantization } from "../../settings.ts";
import { ensureWasmHeapRoom, withWasmHeapErrors } from "../../wasm-heap.ts";

export interface CausalPretrained {
  dir: string;
  config: CausalConfig;
  model: CausalLM;
  tokenizer: TextTokenizer;
  /** Token ids that end a sequence: the config's EOS ids plus the tokenizer's eos_token. */
  eosIds: number[];
}

function tokenContent(value: unknown): string | undefined {
  if (typeof value === "string") return value;
  if (value && typeof value === "object" && typeof (value as { content?: unknown }).content === "string") return (value as { content: string }).content;
  return undefined;
}

/** The text of a special token named in tokenizer_config.json ("bos_token", "eos_token"), plain or as an AddedToken object. */
export function specialTokenText(tokenizer: TextTokenizer, key: string): string | undefined {
  return tokenContent(tokenizer.settings[key]);
}

/** How a job stores its frozen linear weights (lora.quantization, lora.doubleQuant). */
export interface WeightStorage {
  quantization: Quantization;
  doubleQuant: boolean;
}

/**
 * Llama-family linear weights go to the addon as they are read (in their stored dtype, or quantized)
 * when it is loaded; GPT-2's fused Conv1D layers stay float32 tensors, so quantizing them is refused.
 */
function freezeFor(family: CausalConfig["family"], { quantization, doubleQuant }: WeightStorage): Freeze | undefined {
  if (family === "gpt2") {
    if (quantization !== "none") throw new FrozenStorageError(`lora.quantization "${quantization}" applies to Llama-family models only (GPT-2's Conv1D layers stay float32)`);
    return undefined;
  }
  if (!frozenStorageAvailable()) {
    if (quantization !== "none") requireFrozenStorage(quantization);
    return undefined;
  }
  return (raw) => {
    const name = canonicalLlamaName(raw.name);
    if (!name || !isLlamaLinear(name) || raw.dtype === "F64" || raw.shape.length !== 2) return undefined;
    return createFrozenLinear(raw.bytes, raw.dtype, raw.shape, quantization, doubleQuant);
  };
}

/** A decoder folder's config and tokenizer, without its weights: all that encoding text needs. */
export async function loadCausalTokenizer(dir: string): Promise<Omit<CausalPretrained, "model">> {
  const config = await readCausalConfig(dir);
  if (!existsSync(path.join(dir, "tokenizer.json"))) throw new ModelConfigError(`${dir} has no tokenizer.json`);
  // Decoders rarely define a pad token; padded positions are masked out of the loss, so EOS serves.
  const tokenizer = await TextTokenizer.load(dir, { padId: config.padTokenId ?? config.eosTokenIds[0] ?? 0, usesTypeIds: false });
  const eosText = specialTokenText(tokenizer, "eos_token");
  const eosFromTokenizer = eosText === undefined ? undefined : tokenizer.tokenId(eosText);
  const eosIds = [...new Set([...config.eosTokenIds, ...(eosFromTokenizer === undefined ? [] : [eosFromTokenizer])])];
  if (eosIds.length === 0) throw new ModelConfigError(`${dir}: neither config.json nor tokenizer_config.json names an EOS token`);
  return { dir, config, tokenizer, eosIds };
}

export async function loadCausalPretrained(dir: string, storage: WeightStorage = { quantization: "none", doubleQuant: false }): Promise<CausalPretrained> {
  const { config, tokenizer, eosIds } = await loadCausalTokenizer(dir);
  const freeze = freezeFor(config.family, storage);
  // Weights go to the device last, once nothing else can refuse the folder; refused before anything is
  // read when the ones that live in the wasm heap cannot fit it (frozen linears live outside it).
  const what = `the weights of ${path.basename(dir)}`;
  const parameters = modelParameters(config.raw);
  const heapBytes = freeze ? parameters.otherParameters * Float32Array.BYTES_PER_ELEMENT : frozenWeightBytes(parameters, "none");
  ensureWasmHeapRoom(what, heapBytes);
  const stored = await readCheckpoint(dir, freeze);
  // Qwen2 and Mistral are the Llama body (their biases and windows come from the config).
  const model = await withWasmHeapErrors(what, heapBytes, () => (config.family === "gpt2" ? Gpt2LM.fromCheckpoint(config, stored) : LlamaLM.fromCheckpoint(config, stored)));
  return { dir, config, model, tokenizer, eosIds };
}

/** The chat formatter of a loaded model: its chat_template, or the documented fallback. */
export function chatFormatterOf(pretrained: Pick<CausalPretrained, "tokenizer" | "eosIds">): ChatFormatter {
  const { tokenizer, eosIds } = pretrained;
  const eos = specialTokenText(tokenizer, "eos_token") ?? tokenizer.decode([eosIds[0]], false);
  const bos = specialTokenText(tokenizer, "bos_token") ?? "";
  return new ChatFormatter(tokenizer.settings, { bos_token: bos, eos_token: eos });
}
