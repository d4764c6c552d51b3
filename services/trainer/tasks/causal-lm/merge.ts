// Merging a causal LM adapter into a full GPT2LMHeadModel / LlamaForCausalLM / Qwen2ForCausalLM /
// MistralForCausalLM folder.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { parseCausalConfig } from "./config.ts";
import { readModelConfigJson } from "../../hf/config.ts";
import { canonicalGpt2Name } from "./gpt2.ts";
import { canonicalLlamaName } from "./llama.ts";
import { readCheckpoint } from "../../hf/weights.ts";
import { AdapterError, loadAdapter } from "../../peft.ts";
import { copyTokenizerFiles, mergedWeights } from "../../lora-merge.ts";
import { writeFolderAtomically } from "../../atomic-folder.ts";
import { writeSafetensors, type NamedArray } from "../../safetensors.ts";

const LM_CLASS = { gpt2: "GPT2LMHeadModel", llama: "LlamaForCausalLM", qwen2: "Qwen2ForCausalLM", mistral: "MistralForCausalLM" } as const;

/** Base weights (names with their model prefix) plus scale · B A in every adapted linear. */
export async function mergeCausalAdapter(modelDir: string, adapterDir: string, outDir: string): Promise<void> {
  const raw = await readModelConfigJson(modelDir);
  const config = parseCausalConfig(raw);
  const adapter = await loadAdapter(adapterDir);
  if (adapter.taskType !== "CAUSAL_LM") throw new AdapterError(`adapter task_type is ${adapter.taskType}, not CAUSAL_LM`);
  const canonical = config.family === "gpt2" ? canonicalGpt2Name : canonicalLlamaName;
  const base = new Map<string, NamedArray>();
  for (const [name, value] of await readCheckpoint(modelDir)) {
    const renamed = canonical(name);
    if (renamed) base.set(renamed, value);
  }
  const merged = mergedWeights(base, adapter);
  await writeFolderAtomically(outDir, async (tmp) => {
    await writeFile(path.join(tmp, "config.json"), JSON.stringify({ ...raw, architectures: [LM_CLASS[config.family]] }, null, 2) + "\n");
    await writeSafetensors(path.join(tmp, "model.safetensors"), merged);
    await copyTokenizerFiles(modelDir, tmp);
  });
}
