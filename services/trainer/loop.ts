// The training loop every task shares: seeded data order, gradient accumulation and clipping, AdamW on a
// warmup-then-decay schedule, evaluation and checkpoints on a step cadence, checkpoints that resume the
// same curve, and the final adapter. A task (classification, causal LM) says what the examples are, which
// parameters train, how a micro-batch's loss and the validation metrics are computed, and what the adapter is
// (training-contracts.ts declares what the loop, its tasks and its callers exchange).
import { copyFile, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { writeFolderAtomically } from "./atomic-folder.ts";
import { epochBatches } from "./data/batching.ts";
import { EarlyStopper } from "./early-stopping.ts";
import { Dropout } from "./layers/lora-forward.ts";
import { adapterForwardOptions } from "./lora.ts";
import { AdamW, ADAMW_DEFAULTS, clipByGlobalNorm, scheduleFactor, warmupSteps } from "./optim.ts";
import { writeModelCard } from "./model-card.ts";
import { writeAdapterFiles } from "./peft.ts";
import { finalReport, type DetailedEvaluation } from "./report.ts";
import { readSafetensors, writeSafetensors, type NamedArray } from "./safetensors.ts";
import { TrainingConfigError, type JobSettings } from "./settings.ts";
import type { TrainerState, TrainHooks, TrainingTask, TrainOptions, TrainResult } from "./training-contracts.ts";

/** The detailed evaluation of saved weights (early stopping's best), on tensors made for it. */
function evaluateWeights<E extends { ids: number[] }>(task: TrainingTask<E>, weights: Map<string, NamedArray>): DetailedEvaluation {
  const tensors = new Map([...weights].map(([key, { shape, data }]) => [key, tf.tensor(data, shape, "float32")]));
  try {
    return task.evaluateInDetail(adapterForwardOptions(tensors, task.lora));
  } finally {
    for (const tensor of tensors.values()) tensor.dispose();
  }
}

export function toArrays(tensors: Map<string, tf.Tensor>): Map<string, NamedArray> {
  return new Map([...tensors].map(([name, tensor]) => [name, { shape: tensor.shape, data: (tensor.dataSync() as Float32Array).slice() }]));
}

/** An earlier adapter's weights as this task's starting point: the same parameters, shapes and (for a head) labels, or a TrainingConfigError. */
async function startingWeights(dir: string, expected: Map<string, NamedArray>, labels: string[]): Promise<Map<string, NamedArray>> {
  const weights = await readSafetensors(path.join(dir, "adapter_model.safetensors"));
  for (const [key, { shape }] of expected) {
    const found = weights.get(key);
    if (!found) throw new TrainingConfigError(`the starting adapter has no ${key}: it was trained with other target modules or another model`);
    if (JSON.stringify(found.shape) !== JSON.stringify(shape)) {
      throw new TrainingConfigError(`the starting adapter's ${key} is [${found.shape.join(", ")}], this job's is [${shape.join(", ")}]: another rank, model or label count`);
    }
  }
  const extra = [...weights.keys()].find((key) => !expected.has(key));
  if (extra) throw new TrainingConfigError(`the starting adapter has ${extra}, which this job does not train: it was trained with other target modules`);
  if (labels.length) {
    const saved = (JSON.parse(await readFile(path.join(dir, "metrics.json"), "utf8").catch(() => "{}")) as { labels?: string[] }).labels;
    if (saved && JSON.stringify(saved) !== JSON.stringify(labels)) throw new TrainingConfigError(`the starting adapter's head predicts [${saved.join(", ")}], this job's data has [${labels.join(", ")}]`);
  }
  return weights;
}

/** Trains the task's parameters; always disposes them, the optimizer and the task. */
export async function runTraining<E extends { ids: number[] }>(task: TrainingTask<E>, options: TrainOptions, settings: JobSettings, hooks: TrainHooks, backend: string): Promise<TrainResult> {
  const hyper = settings.hyperparameters;
  const examples = task.trainExamples;
  const accumulation = hyper.gradientAccumulationSteps;
  const batchesPerEpoch = Math.ceil(examples.length / hyper.batchSize);
  const stepsPerEpoch = Math.ceil(batchesPerEpoch / accumulation);
  const totalSteps = Math.min(hyper.maxSteps ?? Infinity, stepsPerEpoch * hyper.epochs);
  const warmup = warmupSteps(totalSteps, hyper.warmupRatio);
  const schedule = { seed: hyper.seed, batchSize: hyper.batchSize, epochs: hyper.epochs, accumulation, totalSteps, trainExamples: examples.length, ...task.schedule };

  const optimizer = new AdamW({ ...ADAMW_DEFAULTS, weightDecay: hyper.weightDecay });
  const params = new Map<string, tf.Variable>();
  try {
    let state: TrainerState = { step: 0, tokensSeen: 0, labels: task.labels, lora: task.lora, schedule, lossCurve: [], evaluations: [] };
    let initial = task.initialParams;
    let savedMoments: Map<string, NamedArray> | undefined;
    if (options.resumeFrom) {
      const saved = JSON.parse(await readFile(path.join(options.resumeFrom, "trainer_state.json"), "utf8")) as TrainerState;
      if (JSON.stringify(saved.schedule) !== JSON.stringify(schedule) || JSON.stringify(saved.labels) !== JSON.stringify(task.labels) || JSON.stringify(saved.lora) !== JSON.stringify(task.lora)) {
        const settings = task.labels.length ? "labels, LoRA settings" : "LoRA settings";
        throw new TrainingConfigError(`the checkpoint was made with other data, ${settings} or schedule; it cannot be resumed with these`);
      }
      state = saved;
      initial = await readSafetensors(path.join(options.resumeFrom, "adapter_model.safetensors"));
      savedMoments = await readSafetensors(path.join(options.resumeFrom, "optimizer.safetensors"));
    } else if (options.initFrom) {
      initial = await startingWeights(options.initFrom, task.initialParams, task.labels);
    }

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
    const stopper = hyper.earlyStopping ? new EarlyStopper(hyper.earlyStopping, state.earlyStopping) : undefined;
    if (stopper && !task.validationCount) throw new TrainingConfigError("earlyStopping needs validation data: a validation file or validationSplit");
    // The best evaluation's weights, for the adapter; after a resume they are in the checkpoint saved at that step
    // (the worker brings it back with the newest; should it be missing, the adapter is the last step's).
    const bestFile = stopper?.state && options.checkpointDir ? path.join(options.checkpointDir, `step-${stopper.state.bestStep}`, "adapter_model.safetensors") : undefined;
    let best = bestFile ? await readSafetensors(bestFile).catch(() => undefined) : undefined;
    const baseEvaluation = task.validationCount ? task.evaluateInDetail(task.baseForward) : undefined;
    const baseline = baseEvaluation?.metrics ?? {};
    const evaluateAdapter = () => (task.validationCount ? task.evaluate(adapterForwardOptions(params, task.lora)) : {});

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
        await writeAdapterFiles(tmp, task.adapter(toArrays(params)), { step: state.step });
        await writeSafetensors(path.join(tmp, "optimizer.safetensors"), moments);
        await writeFile(path.join(tmp, "trainer_state.json"), JSON.stringify(state) + "\n");
      });
      lastCheckpoint = { step: state.step, dir };
      await hooks.onCheckpoint?.(lastCheckpoint);
    };

    let stoppedEarlyAt: number | undefined;
    const started = Date.now();
    const firstStep = state.step;
    let tokensThisRun = 0;
    const epochCache = new Map<number, number[][]>();
    const lengths = examples.map((example) => example.ids.length);
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
        const batch = indices.map((i) => examples[i]);
        stepTokens += batch.reduce((sum, example) => sum + example.ids.length, 0);
        const forward = adapterForwardOptions(params, task.lora, new Dropout(`${hyper.seed}:${state.step}:${micro}`));
        const { value, grads } = tf.variableGrads(() => task.loss(batch, forward).div(microBatches.length) as tf.Scalar, [...params.values()]);
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
      if (hyper.maxGradNorm > 0) clipByGlobalNorm(gradients, hyper.maxGradNorm);
      const learningRate = hyper.learningRate * scheduleFactor(state.step, totalSteps, warmup, hyper.scheduler);
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
      let checkpointed = false;
      if (hyper.evalEverySteps && state.step % hyper.evalEverySteps === 0 && state.step < totalSteps && task.validationCount) {
        const report = { step: state.step, metrics: evaluateAdapter(), baseline };
        state.evaluations.push(report);
        hooks.onEvaluation?.(report);
        if (stopper) {
          const verdict = stopper.observe(state.step, report.metrics);
          state.earlyStopping = stopper.state;
          if (verdict.improved) {
            best = toArrays(params);
            // A checkpoint at every new best: the adapter it becomes is a checkpoint users can see.
            if (options.checkpointDir) {
              await saveCheckpoint();
              checkpointed = true;
            }
          }
          if (verdict.stop) stoppedEarlyAt = state.step;
        }
      }
      if (!checkpointed && hyper.checkpointEverySteps && state.step % hyper.checkpointEverySteps === 0 && state.step < totalSteps) await saveCheckpoint();
      if (stoppedEarlyAt !== undefined) break;
    }

    // Stopped early: the evaluation at this step was just made.
    const lastEvaluation = stoppedEarlyAt === undefined && task.validationCount ? task.evaluateInDetail(adapterForwardOptions(params, task.lora)) : undefined;
    const metrics = stoppedEarlyAt !== undefined ? state.evaluations.at(-1)!.metrics : (lastEvaluation?.metrics ?? {});
    if (task.validationCount && stoppedEarlyAt === undefined) {
      const report = { step: state.step, metrics, baseline };
      state.evaluations.push(report);
      hooks.onEvaluation?.(report);
      if (stopper?.observe(state.step, metrics).improved) best = undefined;
    }
    // The best evaluation's weights, unless the user keeps the last step's (or the last step was the best).
    const fromBest = stopper && stopper.config.keep === "best" && best !== undefined && stopper.state!.bestStep !== state.step;
    const adapterStep = fromBest ? stopper.state!.bestStep : state.step;
    // The detail of the weights the adapter holds: the last evaluation's, or one made now of the kept step's weights.
    let adapterEvaluation = lastEvaluation;
    if (task.validationCount && !lastEvaluation) adapterEvaluation = fromBest ? evaluateWeights(task, best!) : task.evaluateInDetail(adapterForwardOptions(params, task.lora));
    const storedMetrics = state.evaluations.find((report) => report.step === adapterStep)?.metrics ?? {};
    const adapterMetrics = { ...adapterEvaluation?.metrics, ...storedMetrics };
    const evaluationReport = adapterEvaluation && baseEvaluation ? finalReport(adapterEvaluation.detail, baseEvaluation.detail) : undefined;
    const bestCheckpointFile = fromBest && options.checkpointDir ? path.join(options.checkpointDir, `step-${adapterStep}`, "adapter_model.safetensors") : undefined;
    await writeFolderAtomically(options.outDir, async (tmp) => {
      const adapter = task.adapter(fromBest ? best! : toArrays(params));
      const summary = {
        task: task.name,
        metrics: adapterMetrics,
        adapter_step: adapterStep,
        ...(stopper ? { early_stopping: stopper.summary(stoppedEarlyAt ?? null, adapterStep) } : {}),
        baseline,
        steps: state.step,
        epochs: hyper.epochs,
        train_examples: examples.length,
        train_examples_without_targets: task.examplesWithoutTargets,
        validation_examples: task.validationCount,
        tokens_seen: state.tokensSeen,
        backend,
        settings,
        evaluations: state.evaluations,
        loss_curve: state.lossCurve,
        ...(task.dataSummary ? { data: task.dataSummary } : {}),
        ...(evaluationReport ? { report: evaluationReport } : {}),
      };
      await writeAdapterFiles(tmp, adapter, summary);
      await writeModelCard(tmp, { adapter, metricsFile: { labels: adapter.labels, ...summary }, modelDir: options.modelDir, dataQuality: options.dataQuality });
      // The best checkpoint's own bytes, so the adapter is exactly that checkpoint.
      if (bestCheckpointFile) await copyFile(bestCheckpointFile, path.join(tmp, "adapter_model.safetensors"));
    });
    return { outcome: "completed", step: state.step, adapterDir: options.outDir, metrics: adapterMetrics, baseline, lastCheckpoint, adapterStep, stoppedEarlyAt, report: evaluationReport };
  } finally {
    for (const variable of params.values()) variable.dispose();
    optimizer.dispose();
    task.dispose();
  }
}
