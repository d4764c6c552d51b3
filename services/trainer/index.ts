// The engine's public API; the worker, the API and the CLI import only from here.
export { initBackend, type BackendInfo, type BackendChoice } from "./backend.ts";
export type { LoraOptions } from "./lora.ts";
export {
  train,
  TrainingConfigError,
  type Hyperparameters,
  type TrainOptions,
  type StepReport,
  type EvaluationReport,
  type TrainHooks,
  type TrainResult,
} from "./train.ts";
export { ClassifierService, type Prediction } from "./classifier.ts";
export { loadAdapter, mergeAdapter, AdapterError } from "./peft.ts";
export { ModelConfigError, readEncoderConfig, type EncoderConfig, type Architecture } from "./hf/config.ts";
