// Merging an adapter into a full Hugging Face model folder; the base model's config.json says which
// task's merge applies (each task knows its model class and weight names).
import { readModelConfigJson } from "./hf/config.ts";
import { mergeCausalAdapter } from "./tasks/causal-lm/merge.ts";
import { causalFamilyOf } from "./tasks/causal-lm/config.ts";
import { mergeClassificationAdapter } from "./tasks/classification/merge.ts";

export async function mergeAdapter(modelDir: string, adapterDir: string, outDir: string): Promise<void> {
  if (causalFamilyOf(await readModelConfigJson(modelDir))) return mergeCausalAdapter(modelDir, adapterDir, outDir);
  return mergeClassificationAdapter(modelDir, adapterDir, outDir);
}
