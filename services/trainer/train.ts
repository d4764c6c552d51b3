// Training entry point: checks the settings, builds the task the base model calls for and runs the
// shared loop (loop.ts). Sequence classification lives here: LoRA on a frozen encoder, a fully trained
// head, metrics against the untouched base head. Causal LMs: causal-train.ts.
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "./backend.ts";
import { causalTask } from "./causal-train.ts";
import { balancedClassWeights, encodeExamples, readClassificationFile, splitValidation, type Example } from "./data/classification.ts";
import type { ClassificationRecord } from "./data/records.ts";
import { causalFamilyOf } from "./hf/causal-config.ts";
import { maxInputLength, readModelConfigJson } from "./hf/config.ts";
import { crossEntropy, evaluate } from "./inference.ts";
import { adapterForwardOptions, headKey, initLora, loraKey, resolveLora } from "./lora.ts";
import { checkHyperparameters, runTraining, TrainingConfigError, type TrainHooks, type TrainingTask, type TrainOptions, type TrainResult } from "./loop.ts";
import { headLayout, initialHead, loadPretrainedShared } from "./model/load.ts";
import { splitAdapterTensors } from "./peft.ts";
import type { NamedArray } from "./safetensors.ts";

/** Labels of the checkpoint's head when the data uses exactly those, else the data's labels in sorted order. */
function chooseLabels(records: ClassificationRecord[], checkpointLabels: string[] | undefined): string[] {
  const seen = [...new Set(records.map((record) => record.label))];
  if (checkpointLabels && checkpointLabels.length === seen.length && seen.every((label) => checkpointLabels.includes(label))) return checkpointLabels;
  // Numeric-aware, so integer labels keep their order ("2" before "10").
  return seen.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

export async function train(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const causal = causalFamilyOf(await readModelConfigJson(options.modelDir));
  const backend = await initBackend((process.env.TRAINER_BACKEND ?? "auto") as BackendChoice);
  checkHyperparameters(options.hyper);
  if (options.hyper.checkpointEverySteps && !options.checkpointDir) throw new TrainingConfigError("checkpointEverySteps needs a checkpointDir");
  if (causal) return runTraining(await causalTask(options), options, hooks, backend.name);
  return runTraining(await classificationTask(options), options, hooks, backend.name);
}

async function classificationTask(options: TrainOptions): Promise<TrainingTask<Example>> {
  const hyper = options.hyper;
  const pretrained = await loadPretrainedShared(options.modelDir);
  const { config, model, tokenizer } = pretrained;
  const settings = resolveLora(options.lora, config.architecture);

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
  for (const [module, { a, b }] of initLora(model, settings, hyper.seed)) {
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
    evaluate: (forward) => evaluate(model, tokenizer, validationExamples, forward, labels, evaluationBatch),
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
