// Every job setting (LoRA and training) declared once: name, type, range, default and meaning. The
// engine resolves a job's settings from here, and the CLI's flags and help, the API's request schema
// and the settings table in services/trainer/README.md are all derived from it, so they cannot drift.

/** LoRA target modules used when a job names none, by model_type (PEFT's module names). */
export const DEFAULT_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = {
  distilbert: ["q_lin", "v_lin"],
  bert: ["query", "value"],
  roberta: ["query", "value"],
  gpt2: ["c_attn"],
  llama: ["q_proj", "v_proj"],
  qwen2: ["q_proj", "v_proj"],
  mistral: ["q_proj", "v_proj"],
};

/** How frozen linear weights may be stored: the checkpoint's dtype, int8 per output channel, or QLoRA's NF4. */
export const QUANTIZATIONS = ["none", "int8", "nf4"] as const;
export type Quantization = (typeof QUANTIZATIONS)[number];

/** Recompute decoder layers in the backward: always, never, or when the memory plan calls for it (memory-plan.ts). */
export const GRADIENT_CHECKPOINTING = ["auto", "on", "off"] as const;
export type GradientCheckpointing = (typeof GRADIENT_CHECKPOINTING)[number];

/** Encoder model types (classification): gradient checkpointing applies to decoders only. */
const ENCODER_MODEL_TYPES: readonly string[] = ["distilbert", "bert", "roberta"];

/** Model types whose linear layers stay float32 tensors (encoders; GPT-2's fused Conv1D): lora.quantization is refused for them. */
const UNQUANTIZABLE_MODEL_TYPES: readonly string[] = [...ENCODER_MODEL_TYPES, "gpt2"];

/** PEFT's shorthand for every linear layer of the body (the output head excluded). */
export const ALL_LINEAR = "all-linear";

export interface LoraSettings {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: string[];
  useRslora: boolean;
  /** How frozen linear weights are stored (causal LMs of the Llama family); absent means "none". */
  quantization?: Quantization;
  /** NF4 only: quantize the block scales too (8-bit, blocks of 256), as QLoRA does. */
  doubleQuant?: boolean;
}

export interface Hyperparameters {
  epochs: number;
  batchSize: number;
  learningRate: number;
  warmupRatio: number;
  weightDecay: number;
  maxSeqLength: number;
  seed: number;
  maxSteps?: number;
  evalEverySteps?: number;
  checkpointEverySteps?: number;
  gradientAccumulationSteps: number;
  maxGradNorm: number;
  scheduler: "linear" | "cosine";
  classWeights: "balanced" | null;
  trainOnInputs: boolean;
  packing: boolean;
  gradientCheckpointing: GradientCheckpointing;
  evalGenerations: number;
  evalMaxNewTokens: number;
  earlyStopping?: EarlyStopping;
}

/** Stop when the validation metric has not improved for `patience` evaluations; keep the best (or last) weights. */
export interface EarlyStopping {
  metric: EarlyStoppingMetric;
  patience: number;
  minDelta: number;
  keep: "best" | "last";
}

/** Validation metrics early stopping may watch; the first two improve downwards, the rest upwards. */
export const EARLY_STOPPING_METRICS = ["loss", "perplexity", "accuracy", "macro_f1", "next_token_accuracy"] as const;
export type EarlyStoppingMetric = (typeof EARLY_STOPPING_METRICS)[number];
export const LOWER_IS_BETTER: readonly string[] = ["loss", "perplexity"];

/** A job's settings as given: anything left out takes its declared default. */
export type LoraOptions = Partial<LoraSettings>;
export type HyperparameterOptions = Partial<Omit<Hyperparameters, "earlyStopping">> & { earlyStopping?: Partial<EarlyStopping> };

export interface JobSettings {
  lora: LoraSettings;
  hyperparameters: Hyperparameters;
}

type Range = { minimum?: number; exclusiveMinimum?: number; maximum?: number; exclusiveMaximum?: number };

/** One setting. A default of undefined means "unset": the setting is then absent from the resolved job. */
export type LeafSetting = { flag: string; description: string } & (
  | ({ type: "integer" | "number"; default?: number } & Range)
  | { type: "boolean"; default: boolean }
  | { type: "enum"; values: readonly (string | null)[]; default: string | null }
  | { type: "modules"; default?: undefined; maxItems: number; pattern: string }
);
/** Settings that only mean something together: unset unless given, then each member takes its default. */
export type GroupSetting = { type: "group"; flag: string; description: string; default?: undefined; settings: Record<string, LeafSetting> };
export type Setting = LeafSetting | GroupSetting;

/** Every leaf setting with its path ("earlyStopping.patience") and its own flag. */
export function leafSettings(declarations: Record<string, Setting>): [string, LeafSetting][] {
  return Object.entries(declarations).flatMap(([name, setting]): [string, LeafSetting][] =>
    setting.type === "group" ? Object.entries(setting.settings).map(([member, leaf]): [string, LeafSetting] => [`${name}.${member}`, leaf]) : [[name, setting]],
  );
}

export const LORA_SETTINGS = {
  r: { type: "integer", minimum: 1, maximum: 256, default: 8, flag: "lora-r", description: "rank of the LoRA update matrices" },
  alpha: { type: "number", exclusiveMinimum: 0, maximum: 4096, default: 16, flag: "lora-alpha", description: "the update is scaled by alpha / r (alpha / √r with useRslora)" },
  dropout: { type: "number", minimum: 0, maximum: 0.9, default: 0.05, flag: "lora-dropout", description: "dropout on the LoRA branch's input during training" },
  targetModules: {
    type: "modules",
    maxItems: 32,
    pattern: `^([A-Za-z0-9_.]{1,64}|${ALL_LINEAR})$`,
    flag: "target-modules",
    description: `module names as in PEFT, or ["${ALL_LINEAR}"]; defaults per architecture (${Object.entries(DEFAULT_TARGET_MODULES).map(([type, modules]) => `${type} ${modules.join(",")}`).join("; ")})`,
  },
  useRslora: { type: "boolean", default: false, flag: "rslora", description: "rank-stabilised scaling alpha / √r" },
  quantization: {
    type: "enum",
    values: QUANTIZATIONS,
    default: "none",
    flag: "quantization",
    description: "causal_lm, Llama family: frozen linear weights stored outside the wasm heap as the checkpoint's dtype (none), int8 per output channel, or NF4 (QLoRA)",
  },
  doubleQuant: { type: "boolean", default: false, flag: "double-quant", description: "with quantization nf4: quantize the block scales too (8-bit, blocks of 256), as QLoRA does" },
} as const satisfies Record<keyof LoraSettings, Setting>;

export const HYPERPARAMETER_SETTINGS = {
  epochs: { type: "integer", minimum: 1, maximum: 1000, default: 3, flag: "epochs", description: "passes over the training data" },
  batchSize: { type: "integer", minimum: 1, maximum: 1024, default: 8, flag: "batch-size", description: "examples per micro-batch" },
  learningRate: { type: "number", exclusiveMinimum: 0, maximum: 1, default: 2e-4, flag: "lr", description: "peak AdamW learning rate" },
  warmupRatio: { type: "number", minimum: 0, exclusiveMaximum: 1, default: 0.06, flag: "warmup-ratio", description: "fraction of the steps spent warming the learning rate up from 0" },
  weightDecay: { type: "number", minimum: 0, maximum: 1, default: 0, flag: "weight-decay", description: "AdamW's decoupled weight decay" },
  maxSeqLength: { type: "integer", minimum: 8, maximum: 8192, default: 128, flag: "max-seq-length", description: "tokens per example at most (also capped by the model's positions)" },
  seed: { type: "integer", minimum: 0, maximum: 4294967295, default: 42, flag: "seed", description: "seeds initialisation, data order, validation split and dropout" },
  maxSteps: { type: "integer", minimum: 1, flag: "max-steps", description: "stop after this many optimizer steps (unset: the epochs decide)" },
  evalEverySteps: { type: "integer", minimum: 1, flag: "eval-every", description: "evaluate on the validation set every N steps (unset: at the end only)" },
  checkpointEverySteps: { type: "integer", minimum: 1, flag: "checkpoint-every", description: "save a resumable checkpoint every N steps (unset: none; the worker's CHECKPOINT_EVERY_STEPS)" },
  gradientAccumulationSteps: { type: "integer", minimum: 1, maximum: 1024, default: 1, flag: "grad-accum", description: "micro-batches per optimizer step" },
  maxGradNorm: { type: "number", minimum: 0, default: 1, flag: "max-grad-norm", description: "clip the global gradient norm to this (0: no clipping)" },
  scheduler: { type: "enum", values: ["linear", "cosine"], default: "linear", flag: "scheduler", description: "learning-rate decay after warmup" },
  classWeights: { type: "enum", values: ["balanced", null], default: null, flag: "class-weights", description: "classification: weight the loss by inverse class frequency" },
  trainOnInputs: { type: "boolean", default: false, flag: "train-on-inputs", description: "causal_lm, completion data: compute the loss on prompts too" },
  packing: { type: "boolean", default: false, flag: "packing", description: "causal_lm: concatenate examples into full maxSeqLength blocks" },
  gradientCheckpointing: {
    type: "enum", values: GRADIENT_CHECKPOINTING, default: "auto", flag: "gradient-checkpointing",
    description: "causal_lm: keep only each decoder layer's input and recompute the layer in the backward (about one more forward pass of compute for a fraction of the activation memory); auto: on when the step would not fit the wasm heap without it (memory-plan.ts)",
  },
  evalGenerations: {
    type: "integer", minimum: 0, maximum: 256, default: 4, flag: "eval-generations",
    description: "causal_lm: held-out prompts (the first validation records) generated greedily at the final evaluation, base and adapter, for exact match, ROUGE-L and BLEU (0: none)",
  },
  evalMaxNewTokens: { type: "integer", minimum: 1, maximum: 512, default: 32, flag: "eval-max-new-tokens", description: "causal_lm: tokens generated at most per held-out prompt" },
  earlyStopping: {
    type: "group",
    flag: "early-stopping",
    description: "stop when the validation metric stops improving (unset: never); needs evalEverySteps and validation data",
    settings: {
      metric: { type: "enum", values: EARLY_STOPPING_METRICS, default: "loss", flag: "early-stopping-metric", description: "early stopping: the validation metric watched (loss and perplexity improve downwards)" },
      patience: { type: "integer", minimum: 1, maximum: 1000, default: 3, flag: "early-stopping-patience", description: "early stopping: evaluations without improvement before stopping" },
      minDelta: { type: "number", minimum: 0, default: 0, flag: "early-stopping-min-delta", description: "early stopping: the least change that counts as an improvement" },
      keep: { type: "enum", values: ["best", "last"], default: "best", flag: "early-stopping-keep", description: "early stopping: the adapter holds the best evaluation's weights, or the last step's" },
    },
  },
} as const satisfies Record<keyof Hyperparameters, Setting>;

export const SETTING_GROUPS = { lora: LORA_SETTINGS, hyperparameters: HYPERPARAMETER_SETTINGS } as const;

/** A job's settings, or their combination with its inputs, cannot be trained with. */
export class TrainingConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TrainingConfigError";
  }
}

/** A human range such as "1..256", "(0, 1]" or "≥ 0". */
export function describeRange(setting: Range): string {
  const low = setting.minimum ?? setting.exclusiveMinimum;
  const high = setting.maximum ?? setting.exclusiveMaximum;
  if (low === undefined && high === undefined) return "";
  if (high === undefined) return setting.exclusiveMinimum !== undefined ? `> ${low}` : `≥ ${low}`;
  if (setting.exclusiveMinimum === undefined && setting.exclusiveMaximum === undefined) return `${low}..${high}`;
  return `${setting.exclusiveMinimum !== undefined ? "(" : "["}${low}, ${high}${setting.exclusiveMaximum !== undefined ? ")" : "]"}`;
}

function inRange(value: number, setting: Range): boolean {
  return (
    (setting.minimum === undefined || value >= setting.minimum) &&
    (setting.exclusiveMinimum === undefined || value > setting.exclusiveMinimum) &&
    (setting.maximum === undefined || value <= setting.maximum) &&
    (setting.exclusiveMaximum === undefined || value < setting.exclusiveMaximum)
  );
}

/** The given value checked against its declaration, or the default; undefined for an unset setting. */
function resolveOne(label: string, setting: Setting, value: unknown): unknown {
  if (value === undefined) return setting.default;
  switch (setting.type) {
    case "integer":
    case "number": {
      const range = describeRange(setting);
      const ok = typeof value === "number" && Number.isFinite(value) && (setting.type === "number" || Number.isInteger(value)) && inRange(value, setting);
      if (!ok) throw new TrainingConfigError(`${label} must be ${setting.type === "integer" ? "an integer" : "a number"}${range ? ` in ${range}` : ""}, got ${JSON.stringify(value)}`);
      return value;
    }
    case "boolean":
      if (typeof value !== "boolean") throw new TrainingConfigError(`${label} must be true or false, got ${JSON.stringify(value)}`);
      return value;
    case "enum":
      if (!setting.values.includes(value as string | null)) throw new TrainingConfigError(`${label} must be one of ${setting.values.map(String).join(", ")}, got ${JSON.stringify(value)}`);
      return value;
    case "group":
      if (typeof value !== "object" || value === null || Array.isArray(value)) throw new TrainingConfigError(`${label} must be an object`);
      return resolveGroup(setting.settings, value as Record<string, unknown>, `${label}.`);
    case "modules":
      if (!Array.isArray(value) || value.length === 0 || value.length > setting.maxItems || new Set(value).size !== value.length || value.some((name) => typeof name !== "string" || !new RegExp(setting.pattern).test(name))) {
        throw new TrainingConfigError(`${label} must be 1..${setting.maxItems} distinct module names matching ${setting.pattern}`);
      }
      return value.slice();
  }
}

function resolveGroup<T>(declarations: Record<string, Setting>, given: Record<string, unknown>, prefix: string): T {
  const unknown = Object.keys(given).find((key) => !(key in declarations));
  if (unknown !== undefined) throw new TrainingConfigError(`unknown setting ${prefix}${unknown}`);
  const resolved: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(declarations)) {
    const value = resolveOne(`${prefix}${name}`, setting, given[name]);
    if (value !== undefined) resolved[name] = value;
  }
  return resolved as T;
}

/**
 * A job's complete settings: every given value checked against its declaration, every other one its
 * default. Target modules default by the base model's model_type (DEFAULT_TARGET_MODULES).
 */
export function resolveJobSettings(given: { lora?: LoraOptions; hyperparameters?: HyperparameterOptions }, modelType: string): JobSettings {
  const lora = resolveGroup<Omit<LoraSettings, "targetModules"> & { targetModules?: string[] }>(LORA_SETTINGS, given.lora ?? {}, "lora ");
  const defaultTargets = DEFAULT_TARGET_MODULES[modelType];
  if (!lora.targetModules && !defaultTargets) throw new TrainingConfigError(`no default target modules for model_type ${modelType}; name them`);
  if (lora.quantization !== "none" && UNQUANTIZABLE_MODEL_TYPES.includes(modelType)) {
    throw new TrainingConfigError(`lora.quantization "${lora.quantization}" applies to Llama-family causal LMs only, not model_type ${modelType}`);
  }
  if (lora.doubleQuant && lora.quantization !== "nf4") throw new TrainingConfigError("lora.doubleQuant applies to lora.quantization \"nf4\" only");
  const hyperparameters = resolveGroup<Hyperparameters>(HYPERPARAMETER_SETTINGS, given.hyperparameters ?? {}, "");
  if (hyperparameters.gradientCheckpointing === "on" && ENCODER_MODEL_TYPES.includes(modelType)) {
    throw new TrainingConfigError(`gradientCheckpointing applies to causal LMs only, not model_type ${modelType}`);
  }
  if (hyperparameters.earlyStopping && !hyperparameters.evalEverySteps) throw new TrainingConfigError("earlyStopping needs evalEverySteps: it acts at each evaluation");
  return { lora: { ...lora, targetModules: lora.targetModules ?? [...defaultTargets] }, hyperparameters };
}

/** The JSON schema of one settings group, as the API validates and documents a job request's. */
export function settingsJsonSchema(declarations: Record<string, Setting>): Record<string, unknown> {
  const properties: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(declarations)) {
    const { flag: _flag, type, description, ...rest } = setting;
    if (type === "group") {
      properties[name] = { ...settingsJsonSchema(setting.settings), description };
    } else if (type === "modules") {
      const { maxItems, pattern } = setting;
      properties[name] = { type: "array", minItems: 1, maxItems, uniqueItems: true, items: { type: "string", pattern }, description };
    } else if (type === "enum") {
      properties[name] = { type: setting.values.includes(null) ? ["string", "null"] : "string", enum: setting.values, default: setting.default, description };
    } else {
      properties[name] = { type, ...rest, description };
    }
  }
  return { type: "object", additionalProperties: false, properties };
}
