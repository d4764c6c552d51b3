// Hugging Face tokenizer.json through @huggingface/tokenizers, plus what that library leaves out:
// truncation ("longest_first", special tokens counted) and padding, as the Rust fast tokenizer does.
import { readFile } from "node:fs/promises";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";

export interface EncodedInput {
  ids: number[];
  typeIds: number[];
}

export interface PaddedBatch {
  inputIds: Int32Array;
  attentionMask: Int32Array;
  typeIds: Int32Array;
  batchSize: number;
  length: number;
}

export class TextTokenizer {
  private readonly specialCountSingle: number;
  private readonly specialCountPair: number;

  private constructor(
    private readonly tokenizer: Tokenizer,
    readonly padId: number,
    private readonly usesTypeIds: boolean,
    /** tokenizer_config.json ({} when absent): chat_template, bos_token, eos_token. */
    readonly settings: Record<string, unknown>,
  ) {
    this.specialCountSingle = this.postProcess([], null).tokens.length;
    this.specialCountPair = this.postProcess([], []).tokens.length;
  }

  static async load(modelDir: string, options: { padId: number; usesTypeIds: boolean }): Promise<TextTokenizer> {
    const json = JSON.parse(await readFile(path.join(modelDir, "tokenizer.json"), "utf8")) as object;
    let config: Record<string, unknown> = {};
    try {
      config = JSON.parse(await readFile(path.join(modelDir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    } catch {
      // tokenizer_config.json is optional; tokenizer.json holds everything the encoding needs.
    }
    return new TextTokenizer(new Tokenizer(json, config), options.padId, options.usesTypeIds, config);
  }

  private postProcess(tokens: string[], pair: string[] | null): { tokens: string[]; typeIds: number[] } {
    const processor = this.tokenizer.post_processor;
    if (!processor) return { tokens: pair ? [...tokens, ...pair] : tokens, typeIds: [] };
    const out = processor.post_process(tokens, pair, true);
    return { tokens: out.tokens, typeIds: out.token_type_ids ?? [] };
  }

  tokens(text: string): string[] {
    return this.tokenizer.tokenize(text, { add_special_tokens: false });
  }

  tokenId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  /** Ids of a text piece: no special tokens added, no truncation (special tokens written in the text still count). */
  idsOf(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** The special tokens the post-processor puts before a single text (a BOS for Llama, none for GPT-2). */
  prefixIds(): number[] {
    return this.tokenizer.encode("", { add_special_tokens: true }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    if (ids.length === 0) return "";
    // No clean-up of spaces before punctuation: generated text comes back exactly as the tokens spell it.
    return this.tokenizer.decode(ids, { skip_special_tokens: skipSpecialTokens, clean_up_tokenization_spaces: false });
  }

  /** Ids with special tokens, truncated to maxLength (special tokens included). */
  encode(text: string, maxLength: number, pair?: string): EncodedInput {
    let first = this.tokens(text);
    let second = pair === undefined ? null : this.tokens(pair);
    const budget = maxLength - (second ? this.specialCountPair : this.specialCountSingle);
    if (budget < 1) throw new Error(`maxLength ${maxLength} leaves no room for text after special tokens`);
    if (second) {
      let firstLength = first.length;
      let secondLength = second.length;
      while (firstLength + secondLength > budget) {
        if (firstLength > secondLength) firstLength--;
        else secondLength--;
      }
      first = first.slice(0, firstLength);
      second = second.slice(0, secondLength);
    } else if (first.length > budget) {
      first = first.slice(0, budget);
    }
    const processed = this.postProcess(first, second);
    const ids = processed.tokens.map((token) => {
      const id = this.tokenizer.token_to_id(token);
      if (id === undefined) throw new Error(`token "${token}" has no id in tokenizer.json`);
      return id;
    });
    const typeIds = this.usesTypeIds && processed.typeIds.length === ids.length ? processed.typeIds : new Array<number>(ids.length).fill(0);
    return { ids, typeIds };
  }

  /** Pads to the longest input of the batch (dynamic padding), mask 1 for real tokens. */
  pad(inputs: EncodedInput[]): PaddedBatch {
    const length = Math.max(...inputs.map((input) => input.ids.length));
    const batchSize = inputs.length;
    const inputIds = new Int32Array(batchSize * length).fill(this.padId);
    const attentionMask = new Int32Array(batchSize * length);
    const typeIds = new Int32Array(batchSize * length);
    inputs.forEach((input, row) => {
      inputIds.set(input.ids, row * length);
      attentionMask.fill(1, row * length, row * length + input.ids.length);
      typeIds.set(input.typeIds, row * length);
    });
    return { inputIds, attentionMask, typeIds, batchSize, length };
  }
}
