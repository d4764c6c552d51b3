// Inputs for the causal PyTorch reference (causal_reference.py): seeded PEFT adapters on every
// linear of each tiny decoder, and the probe token sequences.
import { existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { CAUSAL_SPECS } from "../fixtures/make-causal-fixtures.ts";
import type { LoraWeights } from "../../services/trainer/lora.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { saveAdapter } from "../../services/trainer/peft.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { PYTHON } from "./python.ts";

export const CAUSAL_GOLDEN_FILE = path.join(import.meta.dirname, "..", "fixtures", "golden", "causal-logits.json");
export const REFERENCE_ADAPTERS = "reference-adapters";

export interface GoldenSequence {
  ids: number[];
  shape: [number, number];
  logits_f32_base64: string;
  adapter_logits_f32_base64: string;
}

/** Mean next-token cross-entropy of one sequence with the adapter, and its gradient per LoRA tensor (PEFT key). */
export interface GoldenGradients {
  ids: number[];
  loss: number;
  grads_f32_base64: Record<string, string>;
}

export interface CausalGolden {
  torch: string;
  models: Record<string, { weights_sum: number; adapter_sha256: string; sequences: GoldenSequence[]; lora_gradients: GoldenGradients }>;
}

/** The same rule as probe_sequences in causal_reference.py. */
export function probeSequences(vocab: number, offset = 0): number[][] {
  return [Array.from({ length: 9 }, (_, i) => (37 * i + 5 + offset) % vocab), Array.from({ length: 5 }, (_, i) => (11 * i + 2 + offset) % vocab)];
}

export function decodeLogits(base64: string): Float32Array {
  // A small Buffer is a view into Node's shared pool: copy exactly its bytes.
  const bytes = Buffer.from(base64, "base64");
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** A PEFT adapter with seeded non-zero A and B on every linear layer (rsLoRA for llama-linear). */
export async function writeReferenceAdapters(causalDir: string): Promise<void> {
  for (const spec of CAUSAL_SPECS) {
    const dir = path.join(causalDir, REFERENCE_ADAPTERS, spec.name);
    if (existsSync(dir)) continue;
    const pretrained = await loadCausalPretrained(path.join(causalDir, spec.name));
    const rng = Rng.derive(77, spec.name.length);
    const lora = new Map<string, LoraWeights>();
    for (const { name, inFeatures, outFeatures } of pretrained.model.linearModules()) {
      lora.set(name, {
        a: { shape: [4, inFeatures], data: rng.fill(4 * inFeatures, (r) => r.normal(0, 0.2)) },
        b: { shape: [outFeatures, 4], data: rng.fill(outFeatures * 4, (r) => r.normal(0, 0.2)) },
      });
    }
    const targets = [...new Set([...lora.keys()].map((name) => name.slice(name.lastIndexOf(".") + 1)))].sort();
    pretrained.model.dispose();
    await saveAdapter(
      dir,
      {
        settings: { r: 4, alpha: 8, dropout: 0, targetModules: targets, useRslora: spec.name === "llama-linear" },
        modulesToSave: [], lora, head: new Map(), labels: [], baseModelName: spec.name, taskType: "CAUSAL_LM", fanInFanOut: spec.family === "gpt2",
      },
      {},
    );
  }
}

/** Runs causal_reference.py over the fixtures (probe offset as given) with the seeded adapters, or those of `adaptersDir`, and parses its output. */
export async function runCausalReference(causalDir: string, offset = 0, adaptersDir?: string): Promise<CausalGolden> {
  if (!adaptersDir) await writeReferenceAdapters(causalDir);
  const output = execFileSync(PYTHON, [path.join(import.meta.dirname, "causal_reference.py"), causalDir, adaptersDir ?? path.join(causalDir, REFERENCE_ADAPTERS), String(offset)], {
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(output.toString("utf8")) as CausalGolden;
}

export async function readGolden(): Promise<CausalGolden> {
  return JSON.parse(await readFile(CAUSAL_GOLDEN_FILE, "utf8")) as CausalGolden;
}
