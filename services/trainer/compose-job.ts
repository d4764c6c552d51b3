// A composition run: loads the source adapters, composes them (lora-compose.ts), writes the new
// adapter to outDir, and evaluates it on each source's validation set, built exactly as that source's
// training built it (same file or seeded split, same sequence length), beside the base model's numbers.
// The folder carries a model card (composition-card.ts). Returned as a TrainResult so whoever runs training (the worker) publishes it like any adapter.
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { saveComposedAdapter } from "./composition-card.ts";
import { readModelConfigJson } from "./hf/config.ts";
import { adapterForwardOptions } from "./lora.ts";
import { composeAdapters, type CompositionRequest } from "./lora-compose.ts";
import type { TrainHooks, TrainOptions, TrainResult, TrainingTask } from "./training-contracts.ts";
import { adapterTensors, loadAdapter } from "./peft.ts";
import { resolveJobSettings } from "./settings.ts";
import { causalFamilyOf } from "./tasks/causal-lm/config.ts";
import { causalTask } from "./tasks/causal-lm/task.ts";
import { parseEncoderConfig } from "./tasks/classification/config.ts";
import { classificationTask } from "./tasks/classification/task.ts";

export interface ComposeJobOptions extends CompositionRequest {
  modelDir: string;
  outDir: string;
  baseModelName?: string;
  modelCacheSize?: number;
}

/** Metric names: `source_<n>.<metric>`, n counting the sources from 1 in the order given. */
export const sourceMetric = (index: number, metric: string) => `source_${index + 1}.${metric}`;

/** Stop requests are honoured between sources; there is no checkpoint, so a stopped run starts over. */
export async function runComposition(options: ComposeJobOptions, hooks: Pick<TrainHooks, "stopRequested"> = {}): Promise<TrainResult> {
  const sources = await Promise.all(options.sources.map((source) => loadAdapter(source.adapterDir)));
  const composed = composeAdapters(sources, options);
  if (options.baseModelName) composed.baseModelName = options.baseModelName;
  const raw = await readModelConfigJson(options.modelDir);
  const causal = causalFamilyOf(raw);
  const tensors = new Map([...adapterTensors(composed)].map(([key, { shape, data }]) => [key, tf.tensor(data, shape, "float32")]));
  const metrics: Record<string, number> = {};
  const baseline: Record<string, number> = {};
  try {
    for (const [index, source] of options.sources.entries()) {
      const stop = hooks.stopRequested?.() ?? "none";
      if (stop !== "none") return { outcome: stop === "cancel" ? "cancelled" : "checkpointed", step: 0, metrics: {}, baseline: {} };
      const settings = resolveJobSettings({ lora: source.lora, hyperparameters: source.hyper }, causal ?? parseEncoderConfig(raw).architecture);
      const taskOptions: TrainOptions = { ...source, modelDir: options.modelDir, outDir: options.outDir, modelCacheSize: options.modelCacheSize };
      // Evaluation only: no backward, so no layer to recompute.
      const task: TrainingTask<{ ids: number[] }> = causal ? await causalTask(taskOptions, settings, false) : await classificationTask(taskOptions, settings);
      try {
        if (!task.validationCount) continue;
        for (const [name, value] of Object.entries(task.evaluate(adapterForwardOptions(tensors, composed.settings)))) metrics[sourceMetric(index, name)] = value;
        for (const [name, value] of Object.entries(task.evaluate(task.baseForward))) baseline[sourceMetric(index, name)] = value;
      } finally {
        task.dispose();
      }
    }
  } finally {
    for (const tensor of tensors.values()) tensor.dispose();
  }
  const composition = { type: sources.length === 1 ? "linear" : options.type, weights: options.weights, svdRank: options.svdRank ?? null, sources: sources.length };
  await saveComposedAdapter(options.outDir, {
    adapter: composed,
    metrics: { ...(causal ? { task: "causal_lm" } : {}), composition, metrics, baseline },
    sources: sources.map((adapter, index) => ({ name: options.sources[index].name ?? path.basename(options.sources[index].adapterDir), adapter })),
    modelDir: options.modelDir,
  });
  return { outcome: "completed", step: 0, adapterDir: options.outDir, metrics, baseline };
}
