// Sequence classification for the shared training loop: LoRA on a frozen encoder, a fully trained
// head, metrics against the untouched base head.
import * as tf from "@tensorflow/tfjs";
import { splitValidation } from "../../data/batching.ts";
import type { ClassificationRecord } from "../../data/records.ts";
import { adapterForwardOptions, headKey, loraKey } from "../../lora.ts";
import type { TrainingTask, TrainOptions } from "../../training-contracts.ts";
import { crossEntropy } from "../../losses.ts";
import { splitAdapterTensors } from "../../peft.ts";
import type { NamedArray } from "../../safetensors.ts";
import { TrainingConfigError, type JobSettings } from "../../settings.ts";
import { maxInputLength } from "./config.ts";
import { balancedClassWeights, encodeExamples, readClassificationFile, type Example } from "./data.ts";
import { initEncoderLora } from "./encoder.ts";
import { evaluate } from "./inference.ts";
import { headLayout, initialHead, loadPretrainedShared } from "./load.ts";

/** Labels of the checkpoint's head when the data uses exactly those, else the data's labels in sorted order. */
function chooseLabels(records: ClassificationRecord[], checkpointLabels: string[] | undefined): string[] {
  const seen = [...new Set(records.map((record) => record.label))];
  if (checkpointLabels && checkpointLabels.length === seen.length && seen.every((label) => checkpointLabels.includes(label))) return checkpointLabels;
  // Numeric-aware, so integer labels keep their order ("2" before "10").
  return seen.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

function countsOf(values: (string | undefined)[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const value of values) if (value !== undefined) counts[value] = (counts[value] ?? 0) + 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => a.localeCompare(b, "en", { numeric: true })));
}

/** Label counts of both splits, and group counts where the records have groups: what the model card shows of the data. */
function dataSummary(train: ClassificationRecord[], validation: ClassificationRecord[]): Record<string, Record<string, number>> {
  const summary: Record<string, Record<string, number>> = { train_label_counts: countsOf(train.map((r) => r.label)) };
  if (validation.length) summary.validation_label_counts = countsOf(validation.map((r) => r.label));
  for (const [name, records] of [["train_group_counts", train], ["validation_group_counts", validation]] as const) {
    const groups = countsOf(records.map((r) => r.group));
    if (Object.keys(groups).length) summary[name] = groups;
  }
  return summary;
}

export async function classificationTask(options: TrainOptions, jobSettings: JobSettings): Promise<TrainingTask<Example>> {
  const hyper = jobSettings.hyperparameters;
  const pretrained = await loadPretrainedShared(options.modelDir, options.modelCacheSize ?? 1);
  const { config, model, tokenizer } = pretrained;
  const settings = jobSettings.lora;

  let trainRecords = await readClassificationFile(options.trainFile);
  let validationRecords: ClassificationRecord[] = [];
  if (options.validationFile) validationRecords = await readClassificationFile(options.validationFile);
  else if (options.validationSplit && options.validationSplit > 0) {
    ({ train: trainRecords, validation: validationRecords } = splitValidation(trainRecords, options.validationSplit, hyper.seed));
  }
  const labels = chooseLabels(trainRecords, config.labels);
  if (labels.length < 2) throw new TrainingConfigError("classification needs at least two labels in the training data");
  const unknown = validationRecords.find((record) => !labels.includes(record.label));
  if (unknown) throw new TrainingConfigError(`validation label "${unknown.label}" does not occur in the training data`);
  const maxLength = Math.min(hyper.maxSeqLength, maxInputLength(config));
  const trainExamples = encodeExamples(trainRecords, tokenizer, maxLength, labels);
  const validationExamples: Example[] = encodeExamples(validationRecords, tokenizer, maxLength, labels);
  const classWeights = hyper.classWeights === "balanced" ? balancedClassWeights(trainExamples.map((e) => e.label), labels.length) : undefined;

  const { modulesToSave } = headLayout(pretrained, labels.length);
  const baseHead = initialHead(pretrained, labels.length, hyper.seed);
  const initialParams = new Map<string, NamedArray>();
  for (const [module, { a, b }] of initEncoderLora(model, settings, hyper.seed)) {
    initialParams.set(loraKey(module, "A"), a);
    initialParams.set(loraKey(module, "B"), b);
  }
  for (const [name, value] of baseHead) initialParams.set(headKey(name), value);
  const baseHeadTensors = new Map([...baseHead].map(([name, { shape, data }]) => [headKey(name), tf.tensor(data, shape, "float32")]));
  const evaluationBatch = Math.max(hyper.batchSize, 16);

  return {
    trainExamples,
    validationCount: validationExamples.length,
    labels,
    lora: settings,
    schedule: {},
    initialParams,
    loss: (examples, forward) => crossEntropy(model.logits(tokenizer.pad(examples), forward), examples.map((e) => e.label), classWeights),
    evaluate: (forward) => evaluate(model, tokenizer, validationExamples, forward, labels, evaluationBatch).metrics,
    evaluateInDetail: (forward) => evaluate(model, tokenizer, validationExamples, forward, labels, evaluationBatch),
    dataSummary: dataSummary(trainRecords, validationRecords),
    baseForward: adapterForwardOptions(baseHeadTensors, settings),
    adapter: (params) => {
      const { lora, head } = splitAdapterTensors(params);
      return { settings, modulesToSave, lora, head, labels, baseModelName: options.baseModelName ?? options.modelDir };
    },
    // The base model stays loaded for the next job on it; loadPretrainedShared disposes it.
    dispose: () => {
      for (const tensor of baseHeadTensors.values()) tensor.dispose();
    },
  };
}
