// The engine's public API; the worker, the API and the CLI import only from here.
export { initBackend, type BackendInfo, type BackendChoice } from "./backend.ts";
export type { LoraOptions } from "./lora.ts";
export { train } from "./train.ts";
export {
  TrainingConfigError,
  type Hyperparameters,
  type TrainOptions,
  type StepReport,
  type EvaluationReport,
  type TrainHooks,
  type TrainResult,
} from "./loop.ts";
export { ClassifierService, type Prediction } from "./classifier.ts";
export {
  GeneratorService,
  GenerationError,
  type GenerationOptions,
  type GenerationRequest,
  type GenerationResult,
} from "./generate.ts";
export { ChatTemplateError, FALLBACK_CHAT_TEMPLATE, type ChatMessage } from "./chat-template.ts";
export { causalFamilyOf } from "./hf/causal-config.ts";
export { loadAdapter, mergeAdapter, AdapterError } from "./peft.ts";
export { ModelConfigError, readEncoderConfig, readModelConfigJson, type EncoderConfig, type Architecture } from "./hf/config.ts";
