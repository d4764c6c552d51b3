// LoRA with PEFT semantics: target modules by name, A Kaiming-uniform (a = sqrt(5)), B zero.
import type * as tf from "@tensorflow/tfjs";
import type { Dropout, ForwardOptions, LoraModule } from "./layers/lora-forward.ts";
import { Rng } from "./rng.ts";
import type { NamedArray } from "./safetensors.ts";
import { ALL_LINEAR, type LoraSettings } from "./settings.ts";

/** A linear layer of a base model that LoRA can target. */
export interface LinearModule {
  name: string;
  inFeatures: number;
  outFeatures: number;
}

export class LoraOptionsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LoraOptionsError";
  }
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
