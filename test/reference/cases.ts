// Inputs for the PyTorch reference (hf_reference.py) and the engine's outputs for the same inputs.
import { existsSync } from "node:fs";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { MODEL_SPECS } from "../fixtures/make-fixtures.ts";
import { adapterForwardOptions, headKey, loraKey, matchTargetModules } from "../../services/trainer/lora.ts";
import { encoderLinearModules } from "../../services/trainer/tasks/classification/encoder.ts";
import { headLayout, loadPretrained } from "../../services/trainer/tasks/classification/load.ts";
import { loadAdapter, saveAdapter } from "../../services/trainer/peft.ts";
import { Rng } from "../../services/trainer/rng.ts";
import type { PaddedBatch } from "../../services/trainer/tokenizer.ts";

export const REFERENCE_TEXTS = [
  "The movie was GREAT!",
  "naïve café, 中文 and unknown words like xylophonist",
  "boring",
  "a very long review that keeps going and going with many words so that truncation has to cut it off at the maximum length we allow here",
];
export const REFERENCE_MAX_LENGTH = 24;

export interface ReferenceCase {
  input_ids: number[][];
  attention_mask: number[][];
  token_type_ids: number[][];
  adapter: string;
}

export interface ReferenceResult extends ReferenceCase {
  weights_sha256: string;
  adapter_sha256: string;
  cls_hidden: number[][];
  logits: number[][] | null;
  adapter_logits: number[][];
}

const ADAPTER_TARGETS = { distilbert: ["q_lin", "v_lin", "lin1"], bert: ["query", "value", "intermediate.dense"], roberta: ["query", "key", "output.dense"] };

/** A seeded adapter with non-zero B (RoBERTa's uses rsLoRA), written in PEFT's layout. */
async function writeReferenceAdapter(fixturesDir: string, model: string): Promise<string> {
  const relative = path.join("reference-adapters", model);
  const dir = path.join(fixturesDir, relative);
  if (existsSync(dir)) return relative;
  const pretrained = await loadPretrained(path.join(fixturesDir, model));
  const architecture = pretrained.config.architecture;
  const settings = { r: 4, alpha: 8, dropout: 0, targetModules: ADAPTER_TARGETS[architecture], useRslora: architecture === "roberta" };
  const rng = Rng.derive(99, model.length);
  const lora = new Map();
  for (const module of matchTargetModules(encoderLinearModules(pretrained.config), settings.targetModules)) {
    const [out, inFeatures] = pretrained.model.linearShape(module)!;
    lora.set(module, {
      a: { shape: [4, inFeatures], data: rng.fill(4 * inFeatures, (r) => r.normal(0, 0.2)) },
      b: { shape: [out, 4], data: rng.fill(out * 4, (r) => r.normal(0, 0.2)) },
    });
  }
  const layout = headLayout(pretrained, 2);
  const head = new Map(layout.parameters.map(({ name, shape }) => [name, { shape, data: rng.fill(shape.reduce((a, b) => a * b, 1), (r) => r.normal(0, 0.3)) }]));
  await saveAdapter(dir, { settings, modulesToSave: layout.modulesToSave, lora, head, labels: ["negative", "positive"], baseModelName: model }, {});
  return relative;
}

export async function buildReferenceCases(fixturesDir: string, texts = REFERENCE_TEXTS, maxLength = REFERENCE_MAX_LENGTH): Promise<Record<string, ReferenceCase>> {
  const cases: Record<string, ReferenceCase> = {};
  for (const { name } of MODEL_SPECS) {
    const { tokenizer } = await loadPretrained(path.join(fixturesDir, name));
    const batch = tokenizer.pad(texts.map((text) => tokenizer.encode(text, maxLength)));
    const rows = (values: Int32Array) => Array.from({ length: batch.batchSize }, (_, i) => [...values.slice(i * batch.length, (i + 1) * batch.length)]);
    cases[name] = { input_ids: rows(batch.inputIds), attention_mask: rows(batch.attentionMask), token_type_ids: rows(batch.typeIds), adapter: await writeReferenceAdapter(fixturesDir, name) };
  }
  return cases;
}

/** The engine's CLS hidden state, checkpoint-head logits and adapter logits for one case. */
export async function engineOutputs(fixturesDir: string, name: string, input: ReferenceCase) {
  const pretrained = await loadPretrained(path.join(fixturesDir, name));
  const flat = (rows: number[][]) => Int32Array.from(rows.flat());
  const batch: PaddedBatch = {
    inputIds: flat(input.input_ids),
    attentionMask: flat(input.attention_mask),
    typeIds: flat(input.token_type_ids),
    batchSize: input.input_ids.length,
    length: input.input_ids[0].length,
  };
  const headTensors = new Map([...pretrained.checkpointHead].map(([k, v]) => [k, tf.tensor(v.data, v.shape)]));
  const adapter = await loadAdapter(path.join(fixturesDir, input.adapter));
  const adapterTensors = new Map<string, tf.Tensor>();
  for (const [module, { a, b }] of adapter.lora) {
    adapterTensors.set(loraKey(module, "A"), tf.tensor(a.data, a.shape));
    adapterTensors.set(loraKey(module, "B"), tf.tensor(b.data, b.shape));
  }
  for (const [param, { data, shape }] of adapter.head) adapterTensors.set(headKey(param), tf.tensor(data, shape));
  const hidden = pretrained.config.hiddenSize;
  const read = (compute: () => tf.Tensor) => tf.tidy(() => compute().arraySync() as number[][]);
  return {
    clsHidden: read(() => pretrained.model.encode(batch, {}).reshape([batch.batchSize, batch.length * hidden]).slice([0, 0], [batch.batchSize, hidden])),
    logits: headTensors.size ? read(() => pretrained.model.logits(batch, { overrides: headTensors })) : null,
    adapterLogits: read(() => pretrained.model.logits(batch, adapterForwardOptions(adapterTensors, adapter.settings))),
  };
}

export function maxAbsDiff(a: number[][], b: number[][]): number {
  let max = 0;
  a.forEach((row, i) => row.forEach((value, j) => (max = Math.max(max, Math.abs(value - b[i][j])))));
  return max;
}
