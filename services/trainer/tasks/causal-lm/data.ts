// Causal LM examples: completion records (loss on the completion, optionally on the prompt too) and
// chat records (loss on assistant turns), EOS appended, truncated to a maximum length, optionally
// packed into full-length blocks. Labels follow Hugging Face: a copy of the ids, IGNORE where no loss.
import type { ChatFormatter } from "./chat-template.ts";
import type { TextTokenizer } from "../../tokenizer.ts";
import type { TokenBatch } from "./model.ts";
import { loadDatasetFile } from "../../data/jsonl.ts";
import type { ChatRecord, CompletionRecord, DatasetFormat } from "../../data/records.ts";

export const IGNORE = -100;

export interface CausalExample {
  ids: number[];
  /** Same length as ids; position t is predicted from positions < t. */
  labels: number[];
}

export interface EncodingSettings {
  maxLength: number;
  /** Completion format: compute the loss on the prompt tokens as well. */
  trainOnInputs: boolean;
  eosId: number;
}

export class CausalDataError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CausalDataError";
  }
}

export async function readCausalFile(file: string): Promise<{ format: "completion" | "chat"; records: (CompletionRecord | ChatRecord)[] }> {
  const { format, records } = await loadDatasetFile(file);
  if (format === "classification") throw new CausalDataError(`${file} holds classification records; a causal LM trains on completion or chat records`);
  return { format: format as Exclude<DatasetFormat, "classification">, records: records as (CompletionRecord | ChatRecord)[] };
}

function truncate(example: CausalExample, maxLength: number): CausalExample {
  return example.ids.length <= maxLength ? example : { ids: example.ids.slice(0, maxLength), labels: example.labels.slice(0, maxLength) };
}

interface Piece {
  text: string;
  train: boolean;
}

/**
 * Tokenizes the pieces as one text (as Hugging Face tokenizes a prompt with its completion, or a rendered
 * chat), so no piece gets tokens it would not have in the whole: each piece is the growth of the token
 * sequence when it is appended. A token that merges across a boundary belongs to the later piece.
 */
function encodePieces(tokenizer: TextTokenizer, prefix: number[], pieces: Piece[]): CausalExample {
  let text = "";
  let ids: number[] = [];
  let labels: number[] = [];
  for (const piece of pieces) {
    text += piece.text;
    const current = tokenizer.idsOf(text);
    let common = 0;
    while (common < ids.length && common < current.length && ids[common] === current[common]) common++;
    labels = labels.slice(0, common);
    for (let t = common; t < current.length; t++) labels.push(piece.train ? current[t] : IGNORE);
    ids = current;
  }
  return { ids: [...prefix, ...ids], labels: [...prefix.map(() => IGNORE), ...labels] };
}

/** BOS (when the tokenizer adds one) + prompt + completion + EOS; the prompt is masked unless trainOnInputs. */
export function encodeCompletion(record: CompletionRecord, tokenizer: TextTokenizer, settings: EncodingSettings): CausalExample {
  const example = encodePieces(tokenizer, tokenizer.prefixIds(), [
    { text: record.prompt, train: settings.trainOnInputs },
    { text: record.completion, train: true },
  ]);
  example.ids.push(settings.eosId);
  example.labels.push(settings.eosId);
  return truncate(example, settings.maxLength);
}

/** The rendered conversation; only assistant turns (their content and end marker) carry labels unless trainOnInputs. */
export function encodeChat(record: ChatRecord, tokenizer: TextTokenizer, formatter: ChatFormatter, settings: EncodingSettings): CausalExample {
  const pieces = formatter.segments(record.messages).map((segment) => ({ text: segment.text, train: segment.assistant || settings.trainOnInputs }));
  return truncate(encodePieces(tokenizer, [], pieces), settings.maxLength);
}

export function hasLoss(example: CausalExample): boolean {
  return example.labels.some((label, t) => t > 0 && label !== IGNORE);
}

/** Concatenates examples (each ends with its EOS) and cuts the stream into blocks of maxLength. */
export function packExamples(examples: CausalExample[], maxLength: number): CausalExample[] {
  const ids = examples.flatMap((example) => example.ids);
  const labels = examples.flatMap((example) => example.labels);
  const blocks: CausalExample[] = [];
  for (let start = 0; start < ids.length; start += maxLength) {
    blocks.push({ ids: ids.slice(start, start + maxLength), labels: labels.slice(start, start + maxLength) });
  }
  return blocks;
}

/** Right-padded ids and, per row, the (row position, target) pairs the loss is taken over. */
export function causalBatch(examples: CausalExample[], padId: number): { batch: TokenBatch; rows: number[]; targets: number[] } {
  const length = Math.max(...examples.map((example) => example.ids.length));
  const ids = new Int32Array(examples.length * length).fill(padId);
  const rows: number[] = [];
  const targets: number[] = [];
  examples.forEach((example, b) => {
    ids.set(example.ids, b * length);
    for (let t = 1; t < example.ids.length; t++) {
      if (example.labels[t] === IGNORE) continue;
      rows.push(b * length + t - 1);
      targets.push(example.labels[t]);
    }
  });
  return { batch: { ids, batchSize: examples.length, length }, rows, targets };
}
