// Batched logits in input order, and the validation loss and metrics computed from them.
import * as tf from "@tensorflow/tfjs";
import type { Example } from "./data.ts";
import { classificationEvaluation, type ClassificationDetail } from "./metrics.ts";
import type { EncoderClassifier } from "./encoder.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";
import type { EncodedInput, TextTokenizer } from "../../tokenizer.ts";

export function computeLogits(model: EncoderClassifier, tokenizer: TextTokenizer, inputs: EncodedInput[], options: ForwardOptions, batchSize: number): number[][] {
  // Sorting by length keeps padding small; results go back to input order.
  const order = inputs.map((_, i) => i).sort((a, b) => inputs[a].ids.length - inputs[b].ids.length);
  const out: number[][] = new Array(inputs.length);
  for (let start = 0; start < order.length; start += batchSize) {
    const indices = order.slice(start, start + batchSize);
    const rows = tf.tidy(() => model.logits(tokenizer.pad(indices.map((i) => inputs[i])), options).arraySync());
    indices.forEach((index, row) => (out[index] = rows[row]));
  }
  return out;
}

export function evaluate(
  model: EncoderClassifier,
  tokenizer: TextTokenizer,
  examples: Example[],
  options: ForwardOptions,
  labels: string[],
  batchSize: number,
): { metrics: Record<string, number>; detail: ClassificationDetail } {
  const logits = computeLogits(model, tokenizer, examples, options, batchSize);
  return classificationEvaluation(logits, examples.map((example) => example.label), labels, examples.map((example) => example.group));
}

export function softmax(row: number[]): number[] {
  const max = Math.max(...row);
  const exps = row.map((value) => Math.exp(value - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((value) => value / sum);
}
