// The engine's public API; the worker, the API and the CLI import only from here.
export { BackendConflictError, initBackend, type BackendInfo, type BackendChoice } from "./backend.ts";
export {
  DEFAULT_TARGET_MODULES,
  HYPERPARAMETER_SETTINGS,
  LORA_SETTINGS,
  LOWER_IS_BETTER,
  resolveJobSettings,
  settingsJsonSchema,
  TrainingConfigError,
  type HyperparameterOptions,
  type Hyperparameters,
  type JobSettings,
  type LoraOptions,
} from "./settings.ts";
export { train } from "./train.ts";
export { type TrainOptions, type StepReport, type EvaluationReport, type TrainHooks, type TrainResult } from "./training-contracts.ts";
export { type DataQuality } from "./model-card.ts";
export { ClassifierService, type Prediction } from "./tasks/classification/predict.ts";
export {
  GeneratorService,
  GenerationError,
  type GenerationOptions,
  type GenerationRequest,
  type GenerationResult,
} from "./tasks/causal-lm/generate.ts";
export { ChatTemplateError, FALLBACK_CHAT_TEMPLATE, type ChatMessage } from "./tasks/causal-lm/chat-template.ts";
export { causalFamilyOf } from "./tasks/causal-lm/config.ts";
export { loadAdapter, saveAdapter, AdapterError, type Adapter } from "./peft.ts";
export { composeAdapters, COMPOSITION_TYPES, type CompositionOptions, type CompositionRequest, type CompositionSource, type CompositionType } from "./lora-compose.ts";
export { sourceMetric } from "./compose-job.ts";
export { pickSmallestWithinTolerance, relativeGap, type SweepCandidate, type SweepPick } from "./sweep-pick.ts";
export { mergeAdapter } from "./merge.ts";
export { safetensorsElementCount } from "./safetensors.ts";
export { ModelConfigError, readModelConfigJson } from "./hf/config.ts";
export { planTrainingMemory, WEIGHT_STORAGE_MODES, type MemoryPlan, type WeightStorage } from "./memory-plan.ts";
export { formatBytes } from "./wasm-heap.ts";
export { readEncoderConfig, type EncoderConfig, type Architecture } from "./tasks/classification/config.ts";
export {
  DatasetQualityAnalyzer,
  LeakageCheck,
  blockingFindings,
  comparableText,
  type QualityFinding,
  type QualityReport,
  type QualityThresholds,
  type TokenCounting,
} from "./data/quality.ts";
export { loadTokenCounter, type ExampleTokenCounter } from "./token-count.ts";
export { readJsonlLines } from "./data/jsonl.ts";
export { checkRecord, type DatasetFormat, type DatasetRecord } from "./data/records.ts";
