// Classification examples for the engine: tokenised once, batched per epoch from the seed.
import { loadDatasetFile } from "./jsonl.ts";
import type { ClassificationRecord } from "./records.ts";
import { Rng } from "../rng.ts";
import type { EncodedInput, TextTokenizer } from "../tokenizer.ts";

export interface Example extends EncodedInput {
  label: number;
}

export async function readClassificationFile(file: string): Promise<ClassificationRecord[]> {
  const { records } = await loadDatasetFile(file, "classification");
  return records as ClassificationRecord[];
}

export function encodeExamples(records: ClassificationRecord[], tokenizer: TextTokenizer, maxLength: number, labels: string[]): Example[] {
  const index = new Map(labels.map((label, id) => [label, id]));
  return records.map((record) => {
    const label = index.get(record.label);
    if (label === undefined) throw new Error(`label "${record.label}" is not one of the model's labels (${labels.join(", ")})`);
    return { ...tokenizer.encode(record.text, maxLength), label };
  });
}

/** Splits off a seeded fraction of the records for validation. */
export function splitValidation<T>(records: T[], fraction: number, seed: number): { train: T[]; validation: T[] } {
  const order = Rng.derive(seed, 0x5b1).shuffle(records.map((_, i) => i));
  const count = Math.max(1, Math.floor(records.length * fraction));
  const held = new Set(order.slice(0, count));
  return { train: records.filter((_, i) => !held.has(i)), validation: records.filter((_, i) => held.has(i)) };
}

const BUCKET_BATCHES = 50;

/**
 * The batches of one epoch as example indices: a seeded shuffle, then within windows of
 * 50 batches examples are sorted by length so each batch pads little, then the batch order is
 * shuffled again. Depends only on (seed, epoch), so a resumed run sees the same order.
 */
export function epochBatches(lengths: number[], batchSize: number, seed: number, epoch: number): number[][] {
  const rng = Rng.derive(seed, 0xe90c, epoch);
  const order = rng.shuffle(lengths.map((_, i) => i));
  const batches: number[][] = [];
  const window = batchSize * BUCKET_BATCHES;
  for (let start = 0; start < order.length; start += window) {
    const bucket = order.slice(start, start + window).sort((a, b) => lengths[b] - lengths[a]);
    for (let i = 0; i < bucket.length; i += batchSize) batches.push(bucket.slice(i, i + batchSize));
  }
  return rng.shuffle(batches);
}

/** sklearn's "balanced" weights: n_samples / (n_classes * count), 0 for a class with no example. */
export function balancedClassWeights(labels: number[], numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (const label of labels) counts[label]++;
  return counts.map((count) => (count ? labels.length / (numClasses * count) : 0));
}
