// Outside a gradient tape (evaluation, generation) a decoder frees each layer's intermediates once the
// layer's output exists, so a forward pass holds one layer's activations however deep the model is: a
// 1B-class Llama evaluated at batch 8 × 264 would otherwise keep every layer's and exhaust the wasm heap.
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { readSafetensors, writeSafetensors } from "../../services/trainer/safetensors.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";

let fixtures: string;

before(async () => {
  await initBackend("wasm");
  fixtures = await causalFixtures();
});

/** llama-tiny with its last layer repeated up to `layers` layers. */
async function deeperLlama(layers: number): Promise<string> {
  const source = path.join(fixtures, "llama-tiny");
  const dir = path.join(await mkdtemp(path.join(tmpdir(), "deeper-llama-")), "model");
  await cp(source, dir, { recursive: true });
  const config = JSON.parse(await readFile(path.join(source, "config.json"), "utf8"));
  const tensors = await readSafetensors(path.join(source, "model.safetensors"));
  const last = config.num_hidden_layers - 1;
  for (const [name, tensor] of [...tensors]) {
    if (!name.startsWith(`model.layers.${last}.`)) continue;
    for (let layer = last + 1; layer < layers; layer++) tensors.set(name.replace(`layers.${last}.`, `layers.${layer}.`), tensor);
  }
  await writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ ...config, num_hidden_layers: layers }));
  return dir;
}

/** Peak tensor bytes above the loaded weights of a forward pass (no tape) over 4 sequences of 100 tokens. */
async function forwardPeak(dir: string): Promise<number> {
  const { model } = await loadCausalPretrained(dir);
  const ids = Int32Array.from({ length: 400 }, (_, i) => (i * 7) % model.config.vocabSize);
  const start = tf.memory().numBytes;
  const profile = await tf.profile(() => tf.tidy(() => model.logits(model.hidden({ ids, batchSize: 4, length: 100 }, {})).dataSync()));
  model.dispose();
  return profile.peakBytes - start;
}

test("a forward pass outside a tape holds one layer's activations: 8 layers peak about as 2 do", async (t) => {
  const two = await forwardPeak(await deeperLlama(2));
  const eight = await forwardPeak(await deeperLlama(8));
  t.diagnostic(`peak above the weights: 2 layers ${two} bytes, 8 layers ${eight} bytes`);
  assert.ok(eight < 1.25 * two, `8 layers peak at ${eight} bytes against ${two} for 2`);
});
