// The training loop: LoRA on a frozen encoder, a fully trained head, AdamW, seeded data order
// and dropout, evaluation against the untouched base, checkpoints that resume the same curve.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "./backend.ts";
import { balancedClassWeights, encodeExamples, epochBatches, readClassificationFile, splitValidation, type Example } from "./data/classification.ts";
import type { ClassificationRecord } from "./data/records.ts";
import { causalFamilyOf, readModelConfigJson } from "./hf/causal-config.ts";
import { maxInputLength } from "./hf/config.ts";
import { trainCausal } from "./causal-train.ts";
import { crossEntropy, evaluate } from "./inference.ts";
import { adapterForwardOptions, headKey, initLora, loraKey, resolveLora, type LoraOptions, type LoraSettings } from "./lora.ts";
import { Dropout } from "./model/encoder.ts";
import { headLayout, initialHead, loadPretrainedShared } from "./model/load.ts";
import { AdamW, ADAMW_DEFAULTS, clipByGlobalNorm, scheduleFactor, warmupSteps } from "./optim.ts";
import { splitAdapterTensors, writeAdapterFiles, writeFolderAtomically, type Adapter } from "./peft.ts";
import { readSafetensors, writeSafetensors, type NamedArray } from "./safetensors.ts";

export interface Hyperparameters {
  epochs: number;
  batchSize: number;
  learningRate: number;
  warmupRatio: number;
  weightDecay: number;
  maxSeqLength: number;
  seed: number;
  evalEverySteps?: number;
  checkpointEverySteps?: number;
  maxSteps?: number;
  gradientAccumulationSteps?: number;
  maxGradNorm?: number;
  scheduler?: "linear" | "cosine";
  classWeights?: "balanced" | null;
  /** Causal LM, completion format: compute the loss on prompt tokens too (default: completion only). */
  trainOnInputs?: boolean;
  /** Causal LM: concatenate training examples into full maxSeqLength blocks. */
  packing?: boolean;
}

export interface TrainOptions {
  modelDir: string;
  trainFile: string;
  validationFile?: string;
  validationSplit?: number;
  outDir: string;
  lora: LoraOptions;
  hyper: Hyperparameters;
  checkpointDir?: string;
  resumeFrom?: string;
  baseModelName?: string;
}

export interface StepReport {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  learningRate: number;
  tokensPerSecond: number;
  tokensSeen: number;
  elapsedMs: number;
  etaMs: number;
}

export interface EvaluationReport {
  step: number;
  metrics: Record<string, number>;
  baseline: Record<string, number>;
}

export interface TrainHooks {
  onStep?(report: StepReport): void;
  onEvaluation?(report: EvaluationReport): void;
  onCheckpoint?(checkpoint: { step: number; dir: string }): void | Promise<void>;
  stopRequested?(): "none" | "cancel" | "checkpoint";
}

export interface TrainResult {
  outcome: "completed" | "cancelled" | "checkpointed";
  step: number;
  adapterDir?: string;
  metrics: Record<string, number>;
  baseline: Record<string, number>;
  lastCheckpoint?: { step: number; dir: string };
}

export class TrainingConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainingConfigError";
  }
}

export interface TrainerState {
  step: number;
  tokensSeen: number;
  labels: string[];
  lora: LoraSettings;
  /** The hyperparameters that fix the data order and step count; a resumed run must match them. */
  schedule: Record<string, unknown>;
  lossCurve: LossPoint[];
  evaluations: EvaluationReport[];
}

interface LossPoint {
  step: number;
  loss: number;
  learning_rate: number;
}

function requirePositiveInteger(value: number, name: string): void {
  if (!Number.isInteger(value) || value < 1) throw new TrainingConfigError(`${name} must be a positive integer`);
}

export function checkHyperparameters(h: Hyperparameters): void {
  requirePositiveInteger(h.epochs, "epochs");
  requirePositiveInteger(h.batchSize, "batchSize");
  requirePositiveInteger(h.maxSeqLength, "maxSeqLength");
  requirePositiveInteger(h.gradientAccumulationSteps ?? 1, "gradientAccumulationSteps");
  if (h.maxSteps !== undefined) requirePositiveInteger(h.maxSteps, "maxSteps");
  if (!(h.learningRate > 0)) throw new TrainingConfigError("learningRate must be positive");
  if (!(h.warmupRatio >= 0 && h.warmupRatio < 1)) throw new TrainingConfigError("warmupRatio must be in [0, 1)");
  if (!(h.weightDecay >= 0)) throw new TrainingConfigError("weightDecay must be non-negative");
  if (!Number.isInteger(h.seed)) throw new TrainingConfigError("seed must be an integer");
}

/** Labels of the checkpoint's head when the data uses exactly those, else the data's labels in sorted order. */
function chooseLabels(records: ClassificationRecord[], checkpointLabels: string[] | undefined): string[] {
  const seen = [...new Set(records.map((record) => record.label))];
  if (checkpointLabels && checkpointLabels.length === seen.length && seen.every((label) => checkpointLabels.includes(label))) return checkpointLabels;
  // Numeric-aware, so integer labels keep their order ("2" before "10").
  return seen.sort((a, b) => a.localeCompare(b, "en", { numeric: true }));
}

export function toArrays(tensors: Map<string, tf.Tensor>): Map<string, NamedArray> {
  return new Map([...tensors].map(([name, tensor]) => [name, { shape: tensor.shape, data: (tensor.dataSync() as Float32Array).slice() }]));
}

export async function train(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  if (causalFamilyOf(await readModelConfigJson(options.modelDir))) return trainCausal(options, hooks);
  const backend = await initBackend((process.env.TRAINER_BACKEND ?? "auto") as BackendChoice);
  const hyper = options.hyper;
  checkHyperparameters(hyper);
  if (hyper.checkpointEverySteps && !options.checkpointDir) throw new TrainingConfigError("checkpointEverySteps needs a checkpointDir");
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

  const accumulation = hyper.gradientAccumulationSteps ?? 1;
  const batchesPerEpoch = Math.ceil(trainExamples.length / hyper.batchSize);
  const stepsPerEpoch = Math.ceil(batchesPerEpoch / accumulation);
  const totalSteps = Math.min(hyper.maxSteps ?? Infinity, stepsPerEpoch * hyper.epochs);
  const warmup = warmupSteps(totalSteps, hyper.warmupRatio);
  const schedule = { seed: hyper.seed, batchSize: hyper.batchSize, epochs: hyper.epochs, accumulation, totalSteps, trainExamples: trainExamples.length };

  const { modulesToSave } = headLayout(pretrained, labels.length);
  const baseHead = initialHead(pretrained, labels.length, hyper.seed);
  let initial = new Map<string, NamedArray>();
  for (const [module, { a, b }] of initLora(model, settings, hyper.seed)) {
    initial.set(loraKey(module, "A"), a);
    initial.set(loraKey(module, "B"), b);
  }
  for (const [name, value] of baseHead) initial.set(headKey(name), value);

  let state: TrainerState = { step: 0, tokensSeen: 0, labels, lora: settings, schedule, lossCurve: [], evaluations: [] };
  const optimizer = new AdamW({ ...ADAMW_DEFAULTS, weightDecay: hyper.weightDecay });
  let savedMoments: Map<string, NamedArray> | undefined;
  if (options.resumeFrom) {
    const saved = JSON.parse(await readFile(path.join(options.resumeFrom, "trainer_state.json"), "utf8")) as TrainerState;
    if (JSON.stringify(saved.schedule) !== JSON.stringify(schedule) || JSON.stringify(saved.labels) !== JSON.stringify(labels) || JSON.stringify(saved.lora) !== JSON.stringify(settings)) {
      throw new TrainingConfigError("the checkpoint was made with other data, labels, LoRA settings or schedule; it cannot be resumed with these");
    }
    state = saved;
    initial = await readSafetensors(path.join(options.resumeFrom, "adapter_model.safetensors"));
    savedMoments = await readSafetensors(path.join(options.resumeFrom, "optimizer.safetensors"));
  }

  const params = new Map<string, tf.Variable>();
  const keyOfVariable = new Map<string, string>();
  for (const [key, { shape, data }] of initial) {
    const variable = tf.tidy(() => tf.variable(tf.tensor(data, shape, "float32"), true));
    params.set(key, variable);
    keyOfVariable.set(variable.name, key);
  }
  if (savedMoments) {
    for (const key of params.keys()) {
      const m = savedMoments.get(`exp_avg/${key}`);
      const v = savedMoments.get(`exp_avg_sq/${key}`);
      if (m && v) optimizer.moments.set(key, tf.tidy(() => ({ m: tf.variable(tf.tensor(m.data, m.shape), false), v: tf.variable(tf.tensor(v.data, v.shape), false) })));
    }
  }
  const baseHeadTensors = new Map([...baseHead].map(([name, { shape, data }]) => [headKey(name), tf.tensor(data, shape, "float32")]));
  const baselineOptions = adapterForwardOptions(baseHeadTensors, settings);
  const evaluationBatch = Math.max(hyper.batchSize, 16);
  const baseline = validationExamples.length ? evaluate(model, tokenizer, validationExamples, baselineOptions, labels, evaluationBatch) : {};

  const evaluateAdapter = () => (validationExamples.length ? evaluate(model, tokenizer, validationExamples, adapterForwardOptions(params, settings), labels, evaluationBatch) : {});

  const snapshotAdapter = (): Adapter => {
    const { lora, head } = splitAdapterTensors(toArrays(params));
    return { settings, modulesToSave, lora, head, labels, baseModelName: options.baseModelName ?? options.modelDir };
  };

  let lastCheckpoint: { step: number; dir: string } | undefined;
  const saveCheckpoint = async () => {
    if (!options.checkpointDir) throw new TrainingConfigError("a checkpoint was requested but no checkpointDir was given");
    const dir = path.join(options.checkpointDir, `step-${state.step}`);
    const moments = new Map<string, NamedArray>();
    for (const [key, { m, v }] of optimizer.moments) {
      moments.set(`exp_avg/${key}`, { shape: m.shape, data: (m.dataSync() as Float32Array).slice() });
      moments.set(`exp_avg_sq/${key}`, { shape: v.shape, data: (v.dataSync() as Float32Array).slice() });
    }
    await writeFolderAtomically(dir, async (tmp) => {
      await writeAdapterFiles(tmp, snapshotAdapter(), { step: state.step });
      await writeSafetensors(path.join(tmp, "optimizer.safetensors"), moments);
      await writeFile(path.join(tmp, "trainer_state.json"), JSON.stringify(state) + "\n");
    });
    lastCheckpoint = { step: state.step, dir };
    await hooks.onCheckpoint?.(lastCheckpoint);
  };

  const finish = () => {
    for (const variable of params.values()) variable.dispose();
    for (const tensor of baseHeadTensors.values()) tensor.dispose();
    // The base model stays loaded for the next job on it; loadPretrainedShared disposes it.
    optimizer.dispose();
  };

  try {
    const started = Date.now();
    const firstStep = state.step;
    let tokensThisRun = 0;
    const epochCache = new Map<number, number[][]>();
    const lengths = trainExamples.map((example) => example.ids.length);
    const maxGradNorm = hyper.maxGradNorm ?? 1;
    while (state.step < totalSteps) {
      const stop = hooks.stopRequested?.() ?? "none";
      if (stop === "cancel") return { outcome: "cancelled", step: state.step, metrics: {}, baseline, lastCheckpoint };
      if (stop === "checkpoint") {
        await saveCheckpoint();
        return { outcome: "checkpointed", step: state.step, metrics: {}, baseline, lastCheckpoint };
      }
      const epoch = Math.floor(state.step / stepsPerEpoch);
      if (!epochCache.has(epoch)) {
        epochCache.clear();
        epochCache.set(epoch, epochBatches(lengths, hyper.batchSize, hyper.seed, epoch));
      }
      const withinEpoch = state.step % stepsPerEpoch;
      const microBatches = epochCache.get(epoch)!.slice(withinEpoch * accumulation, (withinEpoch + 1) * accumulation);

      const gradients = new Map<string, tf.Tensor>();
      let lossSum = 0;
      let stepTokens = 0;
      microBatches.forEach((indices, micro) => {
        const examples = indices.map((i) => trainExamples[i]);
        const batch = tokenizer.pad(examples);
        stepTokens += examples.reduce((sum, example) => sum + example.ids.length, 0);
        const forward = adapterForwardOptions(params, settings, new Dropout(`${hyper.seed}:${state.step}:${micro}`));
        const { value, grads } = tf.variableGrads(
          () => crossEntropy(model.logits(batch, forward), examples.map((e) => e.label), classWeights).div(microBatches.length) as tf.Scalar,
          [...params.values()],
        );
        lossSum += value.dataSync()[0] * microBatches.length;
        value.dispose();
        for (const [name, grad] of Object.entries(grads)) {
          const key = keyOfVariable.get(name)!;
          const previous = gradients.get(key);
          if (previous) {
            gradients.set(key, previous.add(grad));
            previous.dispose();
            grad.dispose();
          } else gradients.set(key, grad);
        }
      });
      if (maxGradNorm > 0) clipByGlobalNorm(gradients, maxGradNorm);
      const learningRate = hyper.learningRate * scheduleFactor(state.step, totalSteps, warmup, hyper.scheduler ?? "linear");
      optimizer.apply(params, gradients, learningRate, state.step + 1);
      for (const grad of gradients.values()) grad.dispose();

      state.step += 1;
      const loss = lossSum / microBatches.length;
      state.tokensSeen += stepTokens;
      tokensThisRun += stepTokens;
      state.lossCurve.push({ step: state.step, loss, learning_rate: learningRate });
      const elapsedMs = Date.now() - started;
      const doneThisRun = state.step - firstStep;
      hooks.onStep?.({
        step: state.step,
        totalSteps,
        epoch: epoch + (withinEpoch + 1) / stepsPerEpoch,
        loss,
        learningRate,
        tokensPerSecond: elapsedMs > 0 ? (tokensThisRun * 1000) / elapsedMs : 0,
        tokensSeen: state.tokensSeen,
        elapsedMs,
        etaMs: (elapsedMs / doneThisRun) * (totalSteps - state.step),
      });
      if (hyper.evalEverySteps && state.step % hyper.evalEverySteps === 0 && state.step < totalSteps && validationExamples.length) {
        const report = { step: state.step, metrics: evaluateAdapter(), baseline };
        state.evaluations.push(report);
        hooks.onEvaluation?.(report);
      }
      if (hyper.checkpointEverySteps && state.step % hyper.checkpointEverySteps === 0 && state.step < totalSteps) await saveCheckpoint();
    }

    const metrics = evaluateAdapter();
    if (validationExamples.length) {
      const report = { step: state.step, metrics, baseline };
      state.evaluations.push(report);
      hooks.onEvaluation?.(report);
    }
    await writeFolderAtomically(options.outDir, (tmp) =>
      writeAdapterFiles(tmp, snapshotAdapter(), {
        metrics,
        baseline,
        steps: state.step,
        epochs: hyper.epochs,
        train_examples: trainExamples.length,
        validation_examples: validationExamples.length,
        tokens_seen: state.tokensSeen,
        backend: backend.name,
        evaluations: state.evaluations,
        loss_curve: state.lossCurve,
      }),
    );
    return { outcome: "completed", step: state.step, adapterDir: options.outDir, metrics, baseline, lastCheckpoint };
  } finally {
    finish();
  }
}
