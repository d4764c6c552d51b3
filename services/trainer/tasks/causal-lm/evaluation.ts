// Evaluation of a causal LM on its validation set: token-level loss, perplexity and next-token accuracy at
// every evaluation, and at the final one also greedy generations on a bounded number of held-out prompts,
// scored against their reference replies (exact match, ROUGE-L, BLEU; text-metrics.ts states the definitions).
import * as tf from "@tensorflow/tfjs";
import type { ChatRecord, CompletionRecord } from "../../data/records.ts";
import type { ForwardOptions } from "../../layers/lora-forward.ts";
import { crossEntropy } from "../../losses.ts";
import { causalBatch, type CausalExample } from "./data.ts";
import { generateTokens } from "./generate.ts";
import { chatFormatterOf, type CausalPretrained } from "./load.ts";
import { selectRows, type CausalLM } from "./model.ts";
import { corpusBleu, exactMatch, meanRougeL } from "./text-metrics.ts";

export interface GenerationSample {
  prompt: string;
  reference: string;
  output: string;
}

export interface CausalDetail {
  loss: number;
  perplexity: number;
  tokenAccuracy: number;
  generation?: { exactMatch: number; rougeL: number; bleu: number; samples: GenerationSample[] };
}

/** A held-out prompt: its token ids, how it reads, and the reply the data gives for it. */
export interface HeldOutPrompt {
  ids: number[];
  prompt: string;
  reference: string;
}

/** Token-weighted validation loss, its perplexity, and next-token accuracy over all labelled positions. */
export function evaluateCausal(model: CausalLM, examples: CausalExample[], options: ForwardOptions, padId: number, batchSize: number): Record<string, number> {
  let nll = 0;
  let correct = 0;
  let count = 0;
  for (let start = 0; start < examples.length; start += batchSize) {
    const { batch, rows, targets } = causalBatch(examples.slice(start, start + batchSize), padId);
    if (rows.length === 0) continue;
    const [lossSum, hits] = tf.tidy(() => {
      const logits = model.logits(selectRows(model.hidden(batch, options), rows, batch.length));
      const sum = crossEntropy(logits, targets).mul(targets.length).dataSync()[0];
      const predicted = logits.argMax(1).dataSync();
      return [sum, targets.filter((target, i) => predicted[i] === target).length];
    });
    nll += lossSum;
    correct += hits;
    count += targets.length;
  }
  const loss = count ? nll / count : 0;
  return { loss, perplexity: Math.exp(loss), next_token_accuracy: count ? correct / count : 0 };
}

/**
 * The first `limit` validation records as prompts: a completion's prompt (after the tokenizer's BOS) with its
 * completion as reference; a conversation up to its last assistant turn (rendered with the generation prompt)
 * with that turn as reference. Prompts of `maxLength` tokens or more are skipped, as training cut them.
 */
export function heldOutPrompts(records: (CompletionRecord | ChatRecord)[], pretrained: CausalPretrained, maxLength: number, limit: number): HeldOutPrompt[] {
  const { tokenizer } = pretrained;
  const formatter = records.some((record) => "messages" in record) ? chatFormatterOf(pretrained) : undefined;
  const prompts: HeldOutPrompt[] = [];
  for (const record of records) {
    if (prompts.length >= limit) break;
    let prompt: HeldOutPrompt;
    if ("prompt" in record) prompt = { ids: [...tokenizer.prefixIds(), ...tokenizer.idsOf(record.prompt)], prompt: record.prompt, reference: record.completion };
    else {
      let last = record.messages.length - 1;
      while (record.messages[last].role !== "assistant") last--;
      const before = record.messages.slice(0, last);
      prompt = {
        ids: tokenizer.idsOf(formatter!.render(before, true)),
        prompt: before.map((message) => `${message.role}: ${message.content}`).join("\n"),
        reference: record.messages[last].content,
      };
    }
    if (prompt.ids.length > 0 && prompt.ids.length < maxLength) prompts.push(prompt);
  }
  return prompts;
}

/** Greedy generations of the prompts under these forward options, scored against the references. */
export function evaluateGenerations(pretrained: CausalPretrained, prompts: HeldOutPrompt[], options: ForwardOptions, maxNewTokens: number): NonNullable<CausalDetail["generation"]> {
  const { model, tokenizer, eosIds } = pretrained;
  const detokenizer = { decode: (ids: number[]) => tokenizer.decode(ids) };
  const samples = prompts.map(({ ids, prompt, reference }) => ({ prompt, reference, output: generateTokens(model, ids, options, eosIds, detokenizer, { maxNewTokens }).text }));
  const outputs = samples.map((sample) => sample.output);
  const references = samples.map((sample) => sample.reference);
  return { exactMatch: exactMatch(outputs, references), rougeL: meanRougeL(outputs, references), bleu: corpusBleu(outputs, references), samples };
}

/** The final evaluation: the flat metrics (generation's as exact_match, rouge_l, bleu) and the detail. */
export function detailedCausalEvaluation(
  pretrained: CausalPretrained,
  examples: CausalExample[],
  prompts: HeldOutPrompt[],
  options: ForwardOptions,
  settings: { batchSize: number; maxNewTokens: number },
): { metrics: Record<string, number>; detail: CausalDetail } {
  const metrics = evaluateCausal(pretrained.model, examples, options, pretrained.tokenizer.padId, settings.batchSize);
  const detail: CausalDetail = { loss: metrics.loss, perplexity: metrics.perplexity, tokenAccuracy: metrics.next_token_accuracy };
  if (prompts.length > 0) {
    detail.generation = evaluateGenerations(pretrained, prompts, options, settings.maxNewTokens);
    Object.assign(metrics, { exact_match: detail.generation.exactMatch, rouge_l: detail.generation.rougeL, bleu: detail.generation.bleu });
  }
  return { metrics, detail };
}
