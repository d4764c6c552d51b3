// LoRA with PEFT semantics: target modules by name, A Kaiming-uniform (a = sqrt(5)), B zero.
import type * as tf from "@tensorflow/tfjs";
import type { CausalFamily } from "./hf/causal-config.ts";
import type { Architecture } from "./hf/config.ts";
import type { LinearModule } from "./model/causal.ts";
import { encoderLinearModules, type Dropout, type EncoderClassifier, type ForwardOptions, type LoraModule } from "./model/encoder.ts";
import { Rng } from "./rng.ts";
import type { NamedArray } from "./safetensors.ts";

export interface LoraOptions {
  r: number;
  alpha: number;
  dropout: number;
  targetModules?: string[];
  useRslora?: boolean;
}

export interface LoraSettings {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: string[];
  useRslora: boolean;
}

export const DEFAULT_TARGETS: Record<Architecture | CausalFamily, string[]> = {
  distilbert: ["q_lin", "v_lin"],
  bert: ["query", "value"],
  roberta: ["query", "value"],
  gpt2: ["c_attn"],
  llama: ["q_proj", "v_proj"],
};

/** PEFT's shorthand for every linear layer of the body (the output head excluded). */
export const ALL_LINEAR = "all-linear";

export class LoraOptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraOptionsError";
  }
}

export function resolveLora(options: LoraOptions, architecture: Architecture | CausalFamily): LoraSettings {
  if (!Number.isInteger(options.r) || options.r < 1 || options.r > 256) throw new LoraOptionsError("lora r must be an integer in 1..256");
  if (!(options.alpha > 0)) throw new LoraOptionsError("lora alpha must be positive");
  if (!(options.dropout >= 0 && options.dropout < 1)) throw new LoraOptionsError("lora dropout must be in [0, 1)");
  const targetModules = options.targetModules?.length ? options.targetModules : DEFAULT_TARGETS[architecture];
  return { r: options.r, alpha: options.alpha, dropout: options.dropout, targetModules, useRslora: options.useRslora ?? false };
}

export function loraScale(settings: Pick<LoraSettings, "r" | "alpha" | "useRslora">): number {
  return settings.useRslora ? settings.alpha / Math.sqrt(settings.r) : settings.alpha / settings.r;
}

/** PEFT's rule for a list of names: a module matches when its path equals a name or ends with "." + name. */
export function matchTargetModules(modules: string[], targets: string[]): string[] {
  if (targets.length === 1 && targets[0] === ALL_LINEAR) return modules.slice();
  return modules.filter((module) => targets.some((target) => module === target || module.endsWith(`.${target}`)));
}

export interface LoraWeights {
  a: NamedArray;
  b: NamedArray;
}

export function initLora(model: EncoderClassifier, settings: LoraSettings, seed: number): Map<string, LoraWeights> {
  const modules = encoderLinearModules(model.config).flatMap((name) => {
    const shape = model.linearShape(name);
    return shape ? [{ name, inFeatures: shape[1], outFeatures: shape[0] }] : [];
  });
  return initLoraModules(modules, settings, seed, model.config.architecture);
}

/** Fresh LoRA pairs for the linear modules the settings target. */
export function initLoraModules(linears: LinearModule[], settings: LoraSettings, seed: number, modelKind: string): Map<string, LoraWeights> {
  const byName = new Map(linears.map((linear) => [linear.name, linear]));
  const modules = matchTargetModules([...byName.keys()], settings.targetModules);
  if (modules.length === 0) {
    throw new LoraOptionsError(`target modules ${JSON.stringify(settings.targetModules)} match no linear layer of this ${modelKind} model`);
  }
  const rng = Rng.derive(seed, 0x10a);
  const out = new Map<string, LoraWeights>();
  for (const module of modules) {
    const { inFeatures, outFeatures } = byName.get(module)!;
    // kaiming_uniform_(a=sqrt(5)) on [r, in] has bound gain*sqrt(3/fan_in) = 1/sqrt(in).
    const bound = 1 / Math.sqrt(inFeatures);
    out.set(module, {
      a: { shape: [settings.r, inFeatures], data: rng.fill(settings.r * inFeatures, (r) => r.uniform(-bound, bound)) },
      b: { shape: [outFeatures, settings.r], data: new Float32Array(outFeatures * settings.r) },
    });
  }
  return out;
}

/** target_modules as PEFT saves them: all-linear becomes the distinct last names of the layers it matched. */
export function savedTargetModules(settings: LoraSettings, matched: Iterable<string>): string[] {
  if (!(settings.targetModules.length === 1 && settings.targetModules[0] === ALL_LINEAR)) return settings.targetModules;
  return [...new Set([...matched].map((module) => module.slice(module.lastIndexOf(".") + 1)))].sort();
}

/** PEFT's saved names: `base_model.model.<module>.lora_A.weight`, and `base_model.model.<param>` for modules_to_save. */
export const PEFT_PREFIX = "base_model.model.";

export function loraKey(module: string, matrix: "A" | "B"): string {
  return `${PEFT_PREFIX}${module}.lora_${matrix}.weight`;
}

export function headKey(parameter: string): string {
  return `${PEFT_PREFIX}${parameter}`;
}

export type ParsedKey = { kind: "lora"; module: string; matrix: "A" | "B" } | { kind: "head"; parameter: string };

/** Reads a saved key; ".default" (the adapter name) and ".modules_to_save" may or may not be present. */
export function parsePeftKey(key: string): ParsedKey {
  const name = key.replace(/^base_model\.model\./, "").replace(/\.default(?=\.)/g, "").replace(/\.modules_to_save(?=\.)/g, "");
  const match = /^(.*)\.lora_([AB])\.weight$/.exec(name);
  return match ? { kind: "lora", module: match[1], matrix: match[2] as "A" | "B" } : { kind: "head", parameter: name };
}

/** Forward options for a set of adapter tensors keyed as PEFT saves them. */
export function adapterForwardOptions(tensors: Map<string, tf.Tensor>, settings: Pick<LoraSettings, "r" | "alpha" | "useRslora" | "dropout">, dropout?: Dropout): ForwardOptions {
  const scale = loraScale(settings);
  const lora = new Map<string, LoraModule>();
  const overrides = new Map<string, tf.Tensor>();
  for (const [key, value] of tensors) {
    const parsed = parsePeftKey(key);
    if (parsed.kind === "head") {
      overrides.set(parsed.parameter, value);
      continue;
    }
    const entry = lora.get(parsed.module) ?? ({ scale, dropout: settings.dropout } as LoraModule);
    if (parsed.matrix === "A") entry.a = value as tf.Tensor2D;
    else entry.b = value as tf.Tensor2D;
    lora.set(parsed.module, entry);
  }
  return { lora, overrides, dropout };
}
