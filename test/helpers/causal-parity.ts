// The engine's decoders against the PyTorch reference's outputs (test/reference/causal-cases.ts): base and
// adapter logits and the LoRA gradients of a next-token loss for every fixture, on whichever backend the
// calling test file selected (plain wasm in causal-model, the addon's fused kernels in causal-model-blas).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import type { CausalLM } from "../../services/trainer/tasks/causal-lm/model.ts";
import { readSafetensors } from "../../services/trainer/safetensors.ts";
import { adapterForwardOptions, loraKey } from "../../services/trainer/lora.ts";
import type { LoraSettings } from "../../services/trainer/settings.ts";
import { loadAdapter } from "../../services/trainer/peft.ts";
import { CAUSAL_SPECS } from "../fixtures/make-causal-fixtures.ts";
import { decodeLogits, REFERENCE_ADAPTERS, type CausalGolden } from "../reference/causal-cases.ts";

export const TOLERANCE = 1e-4;

/** An adapter's LoRA matrices as tensors by PEFT key, for adapterForwardOptions. */
export function adapterTensors(adapter: Awaited<ReturnType<typeof loadAdapter>>): Map<string, tf.Tensor> {
  const tensors = new Map<string, tf.Tensor>();
  for (const [module, { a, b }] of adapter.lora) {
    tensors.set(loraKey(module, "A"), tf.tensor(a.data, a.shape));
    tensors.set(loraKey(module, "B"), tf.tensor(b.data, b.shape));
  }
  return tensors;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

const sha256 = async (file: string) => createHash("sha256").update(await readFile(file)).digest("hex");

/** Base and adapter logits of the engine against a reference output, per model; returns the largest differences. */
export async function compareWith(fixtures: string, reference: CausalGolden, checkFixtures: boolean): Promise<string[]> {
  const lines: string[] = [];
  assert.deepEqual(Object.keys(reference.models).sort(), CAUSAL_SPECS.map((spec) => spec.name).sort());
  for (const [name, expected] of Object.entries(reference.models)) {
    const dir = path.join(fixtures, name);
    const adapterDir = path.join(fixtures, REFERENCE_ADAPTERS, name);
    if (checkFixtures) {
      const stored = await readSafetensors(path.join(dir, "model.safetensors"));
      let sum = 0;
      for (const { data } of stored.values()) for (const value of data) sum += value;
      const stale = "fixtures differ from those the goldens were made from: run npx tsx test/reference/write-causal-goldens.ts";
      assert.ok(Math.abs(sum - expected.weights_sum) < 1e-6 * Math.max(1, Math.abs(sum)), stale);
      assert.equal(await sha256(path.join(adapterDir, "adapter_model.safetensors")), expected.adapter_sha256, stale);
    }
    const { model } = await loadCausalPretrained(dir);
    const adapter = await loadAdapter(adapterDir);
    const tensors = adapterTensors(adapter);
    const withAdapter = adapterForwardOptions(tensors, adapter.settings);
    let base = 0;
    let adapted = 0;
    for (const sequence of expected.sequences) {
      const ids = Int32Array.from(sequence.ids);
      const batch = { ids, batchSize: 1, length: ids.length };
      base = Math.max(base, maxAbsDiff(tf.tidy(() => model.logits(model.hidden(batch, {})).dataSync()), decodeLogits(sequence.logits_f32_base64)));
      adapted = Math.max(adapted, maxAbsDiff(tf.tidy(() => model.logits(model.hidden(batch, withAdapter)).dataSync()), decodeLogits(sequence.adapter_logits_f32_base64)));
    }
    const gradients = loraGradients(model, tensors, adapter.settings, expected.lora_gradients.ids);
    const lossDiff = Math.abs(gradients.loss - expected.lora_gradients.loss);
    let gradient = 0;
    assert.deepEqual([...gradients.grads.keys()].sort(), Object.keys(expected.lora_gradients.grads_f32_base64).sort());
    for (const [key, value] of gradients.grads) gradient = Math.max(gradient, maxAbsDiff(value, decodeLogits(expected.lora_gradients.grads_f32_base64[key])));
    lines.push(`${name}: max |Δ| logits ${base.toExponential(2)}, with adapter ${adapted.toExponential(2)}, loss ${lossDiff.toExponential(2)}, LoRA gradients ${gradient.toExponential(2)}`);
    assert.ok(base < TOLERANCE, `${name}: logits differ by ${base}`);
    assert.ok(adapted < TOLERANCE, `${name}: adapter logits differ by ${adapted}`);
    assert.ok(lossDiff < TOLERANCE, `${name}: loss differs by ${lossDiff}`);
    assert.ok(gradient < TOLERANCE, `${name}: LoRA gradients differ by ${gradient}`);
    for (const tensor of tensors.values()) tensor.dispose();
    model.dispose();
  }
  return lines;
}

/** Mean next-token cross-entropy of one sequence through the adapter (no dropout) and its gradient in every LoRA tensor. */
function loraGradients(model: CausalLM, tensors: Map<string, tf.Tensor>, settings: LoraSettings, sequence: number[]): { loss: number; grads: Map<string, Float32Array> } {
  const out = new Map<string, Float32Array>();
  let loss = NaN;
  tf.tidy(() => {
    const variables = new Map([...tensors].map(([key, value]) => [key, tf.variable(value, true, `grad-${key}`)]));
    const ids = Int32Array.from(sequence);
    const targets = tf.oneHot(tf.tensor1d(sequence.slice(1), "int32"), model.config.vocabSize).cast("float32");
    const { value, grads } = tf.variableGrads(() => {
      const logits = model.logits(model.hidden({ ids, batchSize: 1, length: ids.length }, adapterForwardOptions(variables, settings)));
      const predicting = logits.slice([0, 0], [ids.length - 1, model.config.vocabSize]);
      return tf.logSoftmax(predicting).mul(targets).sum().neg().div(ids.length - 1) as tf.Scalar;
    }, [...variables.values()]);
    for (const [key, variable] of variables) out.set(key, grads[variable.name].dataSync() as Float32Array);
    loss = value.dataSync()[0];
    for (const variable of variables.values()) variable.dispose();
  });
  return { loss, grads: out };
}
