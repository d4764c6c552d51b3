// Classification examples: records tokenised once with their label ids, and balanced class weights.
import { loadDatasetFile } from "../../data/jsonl.ts";
import type { ClassificationRecord } from "../../data/records.ts";
import type { EncodedInput, TextTokenizer } from "../../tokenizer.ts";

export interface Example extends EncodedInput {
  label: number;
  /** The record's optional group, for per-group metrics. */
  group?: string;
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
    return { ...tokenizer.encode(record.text, maxLength), label, ...(record.group !== undefined ? { group: record.group } : {}) };
  });
}

/** sklearn's "balanced" weights: n_samples / (n_classes * count), 0 for a class with no example. */
export function balancedClassWeights(labels: number[], numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (const label of labels) counts[label]++;
  return counts.map((count) => (count ? labels.length / (numClasses * count) : 0));
}
