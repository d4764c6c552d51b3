// What the training loop (loop.ts), its tasks (classification, causal LM), composition runs and their
// callers (train.ts, the worker) exchange: the options of a run, its hooks and result, the state a
// checkpoint carries, and what a task gives the loop. Declared apart so the tasks need not import the loop.
import type * as tf from "@tensorflow/tfjs";
import type { EarlyStoppingState } from "./early-stopping.ts";
import type { ForwardOptions } from "./layers/lora-forward.ts";
import type { CompositionRequest } from "./lora-compose.ts";
import type { DataQuality } from "./model-card.ts";
import type { Adapter } from "./peft.ts";
import type { DetailedEvaluation, FinalReport } from "./report.ts";
import type { NamedArray } from "./safetensors.ts";
import type { HyperparameterOptions, LoraOptions, LoraSettings } from "./settings.ts";

export interface TrainOptions {
  modelDir: string;
  trainFile: string;
  validationFile?: string;
  validationSplit?: number;
  outDir: string;
  /** The job's settings as given; train() resolves the rest from their declaration (settings.ts). */
  lora: LoraOptions;
  hyper: HyperparameterOptions;
  checkpointDir?: string;
  /** A checkpoint folder to continue: its weights, optimizer moments, step and data order (this job's own, or another job's for `fromCheckpoint`). */
  resumeFrom?: string;
  /** An adapter (or checkpoint) folder whose LoRA and head weights replace the random init; optimizer and step start afresh. */
  initFrom?: string;
  baseModelName?: string;
  /** Classification base models this thread keeps loaded for later jobs (MODEL_CACHE_SIZE); absent: this job's only. */
  modelCacheSize?: number;
  /** Findings about the training data (the job's preflight), for the adapter's model card. */
  dataQuality?: DataQuality;
  /** Instead of training: compose these adapters into outDir and evaluate on each source's validation set (compose-job.ts). */
  composition?: CompositionRequest;
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
  /** The step whose weights the adapter holds: early stopping's best evaluation, else the last step. */
  adapterStep?: number;
  /** With early stopping: the step at which patience ran out, if it did. */
  stoppedEarlyAt?: number;
  /** The final evaluation's detail, adapter and base side by side; absent without validation data. */
  report?: FinalReport;
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
  earlyStopping?: EarlyStoppingState;
}

interface LossPoint {
  step: number;
  loss: number;
  learning_rate: number;
}

/** What the loop needs from a task. Examples are batched by token count, so each has its ids. */
export interface TrainingTask<E extends { ids: number[] }> {
  trainExamples: E[];
  validationCount: number;
  /** Class labels by id; empty for causal LMs. */
  labels: string[];
  lora: LoraSettings;
  /** Task settings that fix the training data, added to the checkpoint's schedule. */
  schedule: Record<string, unknown>;
  /** Trainable parameters by PEFT key, before the first step. */
  initialParams: Map<string, NamedArray>;
  /** Mean loss of one micro-batch. */
  loss(examples: E[], forward: ForwardOptions): tf.Scalar;
  /** Validation metrics under these forward options, at each evaluation; asked only when there are validation examples. */
  evaluate(forward: ForwardOptions): Record<string, number>;
  /** The final evaluation: the same metrics plus any the task computes only once (a causal LM's generations), with their detail. */
  evaluateInDetail(forward: ForwardOptions): DetailedEvaluation;
  /** What the model card says about the data beyond example counts (classification: label and group counts). */
  dataSummary?: Record<string, Record<string, number>>;
  /** Forward options of the untouched base model, the baseline for the adapter's metrics. */
  baseForward: ForwardOptions;
  adapter(params: Map<string, NamedArray>): Adapter;
  /** The adapter's metrics.json names the task; classification adapters predate the name and carry none. */
  name?: "causal_lm";
  /** Records dropped because truncation left them no target token. */
  examplesWithoutTargets?: number;
  dispose(): void;
}
