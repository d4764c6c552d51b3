// Counts an example's tokens exactly as training encodes it (special tokens, EOS, the chat template),
// without loading weights, so a job's preflight can show which examples the model would truncate.
import { readModelConfigJson, ModelConfigError } from "./hf/config.ts";
import { existsSync } from "node:fs";
import path from "node:path";
import type { ChatRecord, CompletionRecord, DatasetRecord } from "./data/records.ts";
import { causalFamilyOf } from "./tasks/causal-lm/config.ts";
import { encodeChat, encodeCompletion, type EncodingSettings } from "./tasks/causal-lm/data.ts";
import { chatFormatterOf, loadCausalTokenizer } from "./tasks/causal-lm/load.ts";
import { maxInputLength, parseEncoderConfig } from "./tasks/classification/config.ts";
import { TextTokenizer } from "./tokenizer.ts";

export interface ExampleTokenCounter {
  /** The longest input the model's positions allow. */
  maxPositions: number;
  /** Tokens of the example as training encodes it, before truncation. */
  count(record: DatasetRecord): number;
}

const UNBOUNDED = Number.MAX_SAFE_INTEGER;

/** Reads config.json, tokenizer.json and tokenizer_config.json of a model folder (weights are not read). */
export async function loadTokenCounter(modelDir: string): Promise<ExampleTokenCounter> {
  const raw = await readModelConfigJson(modelDir);
  if (causalFamilyOf(raw)) {
    const loaded = await loadCausalTokenizer(modelDir);
    // Everything counted as training counts it: the prompt's tokens and the chat turns are all there, trained on or not.
    const settings: EncodingSettings = { maxLength: UNBOUNDED, trainOnInputs: true, eosId: loaded.eosIds[0] };
    // Made now, so a chat_template that does not parse is found while loading, not mid-report.
    const formatter = chatFormatterOf(loaded);
    return {
      maxPositions: loaded.config.maxPositions,
      count: (record) => {
        if ("prompt" in record) return encodeCompletion(record as CompletionRecord, loaded.tokenizer, settings).ids.length;
        return encodeChat(record as ChatRecord, loaded.tokenizer, formatter, settings).ids.length;
      },
    };
  }
  const config = parseEncoderConfig(raw);
  if (!existsSync(path.join(modelDir, "tokenizer.json"))) throw new ModelConfigError(`${modelDir} has no tokenizer.json`);
  const tokenizer = await TextTokenizer.load(modelDir, { padId: config.padTokenId, usesTypeIds: config.typeVocabSize > 1 });
  return {
    maxPositions: maxInputLength(config),
    count: (record) => ("text" in record ? tokenizer.encode(record.text, UNBOUNDED).ids.length : 0),
  };
}
