// Merging a classification adapter into a full *ForSequenceClassification Hugging Face folder.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { writeFolderAtomically } from "../../atomic-folder.ts";
import { readCheckpoint } from "../../hf/weights.ts";
import { copyTokenizerFiles, mergedWeights } from "../../lora-merge.ts";
import { loadAdapter } from "../../peft.ts";
import { writeSafetensors, type NamedArray } from "../../safetensors.ts";
import { readEncoderConfig, sequenceClassificationClass } from "./config.ts";
import { canonicalName, isHeadParameter } from "./load.ts";

/** Writes a full *ForSequenceClassification Hugging Face folder: base weights with the adapter merged in. */
export async function mergeClassificationAdapter(modelDir: string, adapterDir: string, outDir: string): Promise<void> {
  const config = await readEncoderConfig(modelDir);
  const adapter = await loadAdapter(adapterDir);
  const labels = adapter.labels.length ? adapter.labels : config.labels ?? [];
  const stored = await readCheckpoint(modelDir);
  const prefix = config.architecture;
  const base = new Map<string, NamedArray>();
  for (const [name, value] of stored) {
    const canonical = canonicalName(name, prefix);
    if (canonical.startsWith(`${prefix}.`) || isHeadParameter(canonical)) base.set(canonical, value);
  }
  const merged = mergedWeights(base, adapter);
  await writeFolderAtomically(outDir, async (tmp) => {
    const raw = { ...config.raw };
    raw.architectures = [sequenceClassificationClass(config.architecture)];
    raw.id2label = Object.fromEntries(labels.map((label, id) => [String(id), label]));
    raw.label2id = Object.fromEntries(labels.map((label, id) => [label, id]));
    await writeFile(path.join(tmp, "config.json"), JSON.stringify(raw, null, 2) + "\n");
    await writeSafetensors(path.join(tmp, "model.safetensors"), merged);
    await copyTokenizerFiles(modelDir, tmp);
  });
}
