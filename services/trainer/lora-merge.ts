// Merging a LoRA adapter into its base weights, the same arithmetic for every task: W + scale · B A.
import { copyFile, readdir } from "node:fs/promises";
import path from "node:path";
import { loraScale } from "./lora.ts";
import { AdapterError, type Adapter } from "./peft.ts";
import type { NamedArray } from "./safetensors.ts";

/** W + scale · B A for every LoRA module, head replaced: the merged weights. */
export function mergedWeights(base: Map<string, NamedArray>, adapter: Adapter): Map<string, NamedArray> {
  const scale = loraScale(adapter.settings);
  const merged = new Map(base);
  for (const [module, { a, b }] of adapter.lora) {
    const weight = base.get(`${module}.weight`);
    if (!weight) throw new AdapterError(`the base model has no ${module}.weight`);
    // GPT-2's Conv1D stores [in, out] (fan_in_fan_out): the delta B A is added transposed.
    const fanInFanOut = adapter.fanInFanOut ?? false;
    const [out, inFeatures] = fanInFanOut ? [weight.shape[1], weight.shape[0]] : weight.shape;
    const r = a.shape[0];
    const data = weight.data.slice();
    for (let i = 0; i < out; i++) {
      for (let k = 0; k < r; k++) {
        const bik = b.data[i * r + k] * scale;
        if (bik === 0) continue;
        for (let j = 0; j < inFeatures; j++) data[fanInFanOut ? j * out + i : i * inFeatures + j] += bik * a.data[k * inFeatures + j];
      }
    }
    merged.set(`${module}.weight`, { shape: weight.shape, data });
  }
  for (const [name, value] of adapter.head) merged.set(name, value);
  return merged;
}

/** The tokenizer files of a model folder (and its generation settings), for a merged copy of it. */
export async function copyTokenizerFiles(modelDir: string, outDir: string): Promise<void> {
  for (const file of await readdir(modelDir)) {
    if (/^(tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|vocab\.txt|vocab\.json|merges\.txt|generation_config\.json)$/.test(file)) {
      await copyFile(path.join(modelDir, file), path.join(outDir, file));
    }
  }
}
