// Training for causal LMs (train() dispatches here for GPT-2 and Llama folders): LoRA on the frozen
// decoder, token-level cross-entropy on the labelled positions, the same optimizer, schedule, seeded data
// order, checkpoints and hooks as classification, and metrics for the adapter and the untouched base.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { initBackend, type BackendChoice } from "./backend.ts";
import { causalBatch, encodeChat, encodeCompletion, hasLoss, packExamples, readCausalFile, type CausalExample, type EncodingSettings } from "./data/causal.ts";
import { epochBatches, splitValidation } from "./data/classification.ts";
import type { ChatRecord, CompletionRecord } from "./data/records.ts";
import { crossEntropy } from "./inference.ts";
import { adapterForwardOptions, initLoraModules, loraKey, matchTargetModules, resolveLora, savedTargetModules } from "./lora.ts";
import { selectRows, type CausalLM } from "./model/causal.ts";
import { Dropout, type ForwardOptions } from "./model/encoder.ts";
import { chatFormatterOf, loadCausalPretrained, type CausalPretrained } from "./model/load-causal.ts";
import { AdamW, ADAMW_DEFAULTS, clipByGlobalNorm, scheduleFactor, warmupSteps } from "./optim.ts";
import { splitAdapterTensors, writeAdapterFiles, writeFolderAtomically, type Adapter } from "./peft.ts";
import { readSafetensors, writeSafetensors, type NamedArray } from "./safetensors.ts";
import {
  checkHyperparameters,
  toArrays,
  TrainingConfigError,
  type EvaluationReport,
  type TrainerState,
  type TrainHooks,
  type TrainOptions,
  type TrainResult,
} from "./train.ts";

export function encodeCausalRecords(records: (CompletionRecord | ChatRecord)[], format: "completion" | "chat", pretrained: CausalPretrained, settings: EncodingSettings): CausalExample[] {
  if (format === "completion") return records.map((record) => encodeCompletion(record as CompletionRecord, pretrained.tokenizer, settings));
  const formatter = chatFormatterOf(pretrained);
  return records.map((record) => encodeChat(record as ChatRecord, pretrained.tokenizer, formatter, settings));
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

export async function trainCausal(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const backend = await initBackend((process.env.TRAINER_BACKEND ?? "auto") as BackendChoice);
  const hyper = options.hyper;
  checkHyperparameters(hyper);
  if (hyper.checkpointEverySteps && !options.checkpointDir) throw new TrainingConfigError("checkpointEverySteps needs a checkpointDir");
  const pretrained = await loadCausalPretrained(options.modelDir);
  const { config, model, tokenizer } = pretrained;
  const requested = resolveLora(options.lora, config.family);
  const linears = model.linearModules();
  const settings = { ...requested, targetModules: savedTargetModules(requested, matchTargetModules(linears.map((l) => l.name), requested.targetModules)) };

  const train = await readCausalFile(options.trainFile);
  let trainRecords = train.records;
  let validationRecords: (CompletionRecord | ChatRecord)[] = [];
  let validationFormat = train.format;
  if (options.validationFile) {
    const validation = await readCausalFile(options.validationFile);
    validationRecords = validation.records;
    validationFormat = validation.format;
  } else if (options.validationSplit && options.validationSplit > 0) {
    ({ train: trainRecords, validation: validationRecords } = splitValidation(trainRecords, options.validationSplit, hyper.seed));
  }
  const encoding: EncodingSettings = { maxLength: Math.min(hyper.maxSeqLength, config.maxPositions), trainOnInputs: hyper.trainOnInputs ?? false, eosId: pretrained.eosIds[0] };
  const encodedTrain = encodeCausalRecords(trainRecords, train.format, pretrained, encoding);
  const withLoss = encodedTrain.filter(hasLoss);
  const truncatedAway = encodedTrain.length - withLoss.length;
  const trainExamples = hyper.packing ? packExamples(withLoss, encoding.maxLength).filter(hasLoss) : withLoss;
  if (trainExamples.length === 0) throw new TrainingConfigError("no training example keeps a target token within maxSeqLength");
  const validationExamples = encodeCausalRecords(validationRecords, validationFormat, pretrained, encoding).filter(hasLoss);

  const accumulation = hyper.gradientAccumulationSteps ?? 1;
  const batchesPerEpoch = Math.ceil(trainExamples.length / hyper.batchSize);
  const stepsPerEpoch = Math.ceil(batchesPerEpoch / accumulation);
  const totalSteps = Math.min(hyper.maxSteps ?? Infinity, stepsPerEpoch * hyper.epochs);
  const warmup = warmupSteps(totalSteps, hyper.warmupRatio);
  const schedule = {
    seed: hyper.seed, batchSize: hyper.batchSize, epochs: hyper.epochs, accumulation, totalSteps, trainExamples: trainExamples.length,
    maxLength: encoding.maxLength, trainOnInputs: encoding.trainOnInputs, packing: hyper.packing ?? false,
  };

  let initial = new Map<string, NamedArray>();
  for (const [module, { a, b }] of initLoraModules(linears, settings, hyper.seed, config.family)) {
    initial.set(loraKey(module, "A"), a);
    initial.set(loraKey(module, "B"), b);
  }
  let state: TrainerState = { step: 0, tokensSeen: 0, labels: [], lora: settings, schedule, lossCurve: [], evaluations: [] };
  const optimizer = new AdamW({ ...ADAMW_DEFAULTS, weightDecay: hyper.weightDecay });
  let savedMoments: Map<string, NamedArray> | undefined;
  if (options.resumeFrom) {
    const saved = JSON.parse(await readFile(path.join(options.resumeFrom, "trainer_state.json"), "utf8")) as TrainerState;
    if (JSON.stringify(saved.schedule) !== JSON.stringify(schedule) || JSON.stringify(saved.lora) !== JSON.stringify(settings)) {
      throw new TrainingConfigError("the checkpoint was made with other data, LoRA settings or schedule; it cannot be resumed with these");
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
  const padId = tokenizer.padId;
  const evaluationBatch = Math.max(hyper.batchSize, 8);
  const baseline = validationExamples.length ? evaluateCausal(model, validationExamples, {}, padId, evaluationBatch) : {};
  const evaluateAdapter = () => (validationExamples.length ? evaluateCausal(model, validationExamples, adapterForwardOptions(params, settings), padId, evaluationBatch) : {});

  const snapshotAdapter = (): Adapter => {
    const { lora } = splitAdapterTensors(toArrays(params));
    return {
      settings, modulesToSave: [], lora, head: new Map(), labels: [], baseModelName: options.baseModelName ?? options.modelDir,
      taskType: "CAUSAL_LM", fanInFanOut: config.family === "gpt2",
    };
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
        const { batch, rows, targets } = causalBatch(examples, padId);
        stepTokens += examples.reduce((sum, example) => sum + example.ids.length, 0);
        const forward = adapterForwardOptions(params, settings, new Dropout(`${hyper.seed}:${state.step}:${micro}`));
        const { value, grads } = tf.variableGrads(() => {
          const logits = model.logits(selectRows(model.hidden(batch, forward), rows, batch.length));
          return crossEntropy(logits, targets).div(microBatches.length) as tf.Scalar;
        }, [...params.values()]);
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
      hooks.onStep?.({
        step: state.step,
        totalSteps,
        epoch: epoch + (withinEpoch + 1) / stepsPerEpoch,
        loss,
        learningRate,
        tokensPerSecond: elapsedMs > 0 ? (tokensThisRun * 1000) / elapsedMs : 0,
        tokensSeen: state.tokensSeen,
        elapsedMs,
        etaMs: (elapsedMs / (state.step - firstStep)) * (totalSteps - state.step),
      });
      if (hyper.evalEverySteps && state.step % hyper.evalEverySteps === 0 && state.step < totalSteps && validationExamples.length) {
        const report: EvaluationReport = { step: state.step, metrics: evaluateAdapter(), baseline };
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
        task: "causal_lm",
        metrics,
        baseline,
        steps: state.step,
        epochs: hyper.epochs,
        train_examples: trainExamples.length,
        train_examples_without_targets: truncatedAway,
        validation_examples: validationExamples.length,
        tokens_seen: state.tokensSeen,
        backend: backend.name,
        evaluations: state.evaluations,
        loss_curve: state.lossCurve,
      }),
    );
    return { outcome: "completed", step: state.step, adapterDir: options.outDir, metrics, baseline, lastCheckpoint };
  } finally {
    for (const variable of params.values()) variable.dispose();
    optimizer.dispose();
    model.dispose();
  }
}
