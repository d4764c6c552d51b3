// GPT-2, Llama, Qwen2 and Mistral forward passes, bare and with PEFT LoRA adapters, and the gradients of
// a next-token loss in the LoRA matrices, against an independent PyTorch implementation
// (test/reference/causal_reference.py, written from transformers' and PEFT's code): committed goldens
// always, a live run when torch is importable; the KV cache; and loading that frees the float copies as it goes.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { parseCausalConfig } from "../../services/trainer/tasks/causal-lm/config.ts";
import { disposeCache, emptyCache, selectRows } from "../../services/trainer/tasks/causal-lm/model.ts";
import { inverseFrequencies, LlamaLM } from "../../services/trainer/tasks/causal-lm/llama.ts";
import { Gpt2LM } from "../../services/trainer/tasks/causal-lm/gpt2.ts";
import { readCausalConfig } from "../../services/trainer/tasks/causal-lm/config.ts";
import { readCheckpoint } from "../../services/trainer/hf/weights.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { mergeAdapter } from "../../services/trainer/merge.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { compareWith, maxAbsDiff, TOLERANCE } from "../helpers/causal-parity.ts";
import {
  decodeLogits,
  probeSequences,
  readGolden,
  REFERENCE_ADAPTERS,
  runCausalReference,
  writeReferenceAdapters,
  type CausalGolden,
} from "../reference/causal-cases.ts";
import { liveReferenceSkip } from "../reference/python.ts";

let fixtures: string;
let golden: CausalGolden;

before(async () => {
  await initBackend("wasm");
  fixtures = await causalFixtures();
  await writeReferenceAdapters(fixtures);
  golden = await readGolden();
});

test(`logits, bare and with a PEFT adapter on every linear, and LoRA gradients agree with the committed PyTorch reference within ${TOLERANCE}`, async (t) => {
  for (const line of await compareWith(fixtures, golden, true)) t.diagnostic(line);
});

test("building a decoder consumes the checkpoint's float copies as they reach the device, so loading peaks below twice the weights", async () => {
  for (const name of ["gpt2-bare", "llama-tiny", "qwen2-tiny", "mistral-tiny"]) {
    const dir = path.join(fixtures, name);
    const config = await readCausalConfig(dir);
    const stored = await readCheckpoint(dir);
    assert.ok(stored.size > 0);
    const model = config.family === "gpt2" ? Gpt2LM.fromCheckpoint(config, stored) : LlamaLM.fromCheckpoint(config, stored);
    // Only an untied output head is read after the loop, to build its kernel.
    assert.deepEqual([...stored.keys()].filter((key) => key !== "lm_head.weight"), [], name);
    model.dispose();
  }
});

test("an adapter merged into a full model folder gives the reference's adapter logits", async () => {
  const scratch = await mkdtemp(path.join(tmpdir(), "causal-merge-"));
  for (const name of ["gpt2-bare", "llama-tiny", "llama3-tiny", "qwen2-tiny", "mistral-tiny"]) {
    const out = path.join(scratch, name);
    await mergeAdapter(path.join(fixtures, name), path.join(fixtures, REFERENCE_ADAPTERS, name), out);
    const { model, config } = await loadCausalPretrained(out);
    assert.ok(["GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"].includes((config.raw.architectures as string[])[0]));
    for (const sequence of golden.models[name].sequences) {
      const ids = Int32Array.from(sequence.ids);
      const got = tf.tidy(() => model.logits(model.hidden({ ids, batchSize: 1, length: ids.length }, {})).dataSync());
      const diff = maxAbsDiff(got, decodeLogits(sequence.adapter_logits_f32_base64));
      assert.ok(diff < TOLERANCE, `${name}: merged logits differ by ${diff}`);
    }
    model.dispose();
  }
});

test("logits agree with a live run of the PyTorch reference on other tokens", { skip: liveReferenceSkip }, async (t) => {
  const live = await runCausalReference(fixtures, 17);
  assert.deepEqual(live.models["gpt2-tiny"].sequences[0].ids, probeSequences(golden.models["gpt2-tiny"].sequences[0].shape[1], 17)[0]);
  for (const line of await compareWith(fixtures, live, false)) t.diagnostic(line);
});

// mistral-tiny's window (4) is shorter than the sequence (9), so cached steps must mask old keys too.
for (const name of ["gpt2-tiny", "llama-tiny", "llama3-tiny", "qwen2-tiny", "mistral-tiny"]) {
  test(`${name}: a prompt then one token at a time through the KV cache gives the full-sequence logits`, async () => {
    const { model } = await loadCausalPretrained(path.join(fixtures, name));
    const ids = Int32Array.from(golden.models[name].sequences[0].ids);
    const full = tf.tidy(() => model.logits(model.hidden({ ids, batchSize: 1, length: ids.length }, {})).dataSync());
    const vocab = full.length / ids.length;
    const cache = emptyCache();
    const prompt = 4;
    const pieces: Float32Array[] = [tf.tidy(() => model.logits(model.hidden({ ids: ids.slice(0, prompt), batchSize: 1, length: prompt }, {}, cache)).dataSync() as Float32Array)];
    for (let t = prompt; t < ids.length; t++) {
      pieces.push(tf.tidy(() => model.logits(model.hidden({ ids: ids.slice(t, t + 1), batchSize: 1, length: 1 }, {}, cache)).dataSync() as Float32Array));
    }
    assert.equal(cache.length, ids.length);
    const incremental = new Float32Array(full.length);
    let offset = 0;
    for (const piece of pieces) {
      incremental.set(piece, offset);
      offset += piece.length;
    }
    assert.equal(offset, ids.length * vocab);
    assert.ok(maxAbsDiff(incremental, full) < 1e-5);
    disposeCache(cache);
    model.dispose();
  });
}

test("a right-padded batch gives each row the logits it has alone", async () => {
  const { model } = await loadCausalPretrained(path.join(fixtures, "llama-tiny"));
  const [long, short] = golden.models["llama-tiny"].sequences.map((s) => s.ids);
  const alone = tf.tidy(() => model.logits(model.hidden({ ids: Int32Array.from(short), batchSize: 1, length: short.length }, {})).arraySync());
  const padded = Int32Array.from([...long, ...short, ...new Array(long.length - short.length).fill(0)]);
  const batched = tf.tidy(() => model.logits(model.hidden({ ids: padded, batchSize: 2, length: long.length }, {})).arraySync());
  for (let t = 0; t < short.length; t++) assert.ok(maxAbsDiff(batched[long.length + t], alone[t]) < 1e-5);
  model.dispose();
});

test("config parsing: GQA heads, rope scaling types, GPT-2 defaults", () => {
  const llama = parseCausalConfig({ model_type: "llama", hidden_size: 64, num_attention_heads: 8, num_key_value_heads: 2, num_hidden_layers: 1, intermediate_size: 128, vocab_size: 10, rope_scaling: { type: "linear", factor: 4 } });
  assert.equal(llama.numKeyValueHeads, 2);
  assert.equal(llama.headDim, 8);
  assert.deepEqual(llama.ropeScaling, { type: "linear", factor: 4 });
  assert.equal(llama.tieWordEmbeddings, false);
  const gpt2 = parseCausalConfig({ architectures: ["GPT2LMHeadModel"], n_embd: 48, n_head: 3, n_layer: 1, vocab_size: 10 });
  assert.equal(gpt2.intermediateSize, 192);
  assert.equal(gpt2.activation, "gelu_new");
  assert.equal(gpt2.tieWordEmbeddings, true);
  assert.throws(() => parseCausalConfig({ model_type: "llama", rope_scaling: { rope_type: "yarn", factor: 2 } }), /yarn/);
  assert.throws(() => parseCausalConfig({ model_type: "falcon" }), /unsupported.*qwen2, mistral/);
});

test("config parsing: Qwen2 biases and optional windows, Mistral windows", () => {
  const qwen2 = parseCausalConfig({ model_type: "qwen2", num_hidden_layers: 3, sliding_window: 4096, use_sliding_window: false, max_window_layers: 1 });
  assert.deepEqual([qwen2.family, qwen2.attentionBias, qwen2.outputBias, qwen2.mlpBias], ["qwen2", true, false, false]);
  assert.deepEqual(qwen2.layerWindows, [null, null, null]);
  assert.equal(qwen2.tieWordEmbeddings, false);
  const sliding = parseCausalConfig({ model_type: "qwen2", num_hidden_layers: 3, sliding_window: 16, use_sliding_window: true, max_window_layers: 1 });
  assert.deepEqual(sliding.layerWindows, [null, 16, 16]);
  const typed = parseCausalConfig({ model_type: "qwen2", num_hidden_layers: 2, sliding_window: 8, use_sliding_window: true, layer_types: ["sliding_attention", "full_attention"] });
  assert.deepEqual(typed.layerWindows, [8, null]);
  const mistral = parseCausalConfig({ architectures: ["MistralForCausalLM"], num_hidden_layers: 2 });
  assert.deepEqual([mistral.family, mistral.numKeyValueHeads, mistral.attentionBias, mistral.outputBias], ["mistral", 8, false, false]);
  assert.deepEqual(mistral.layerWindows, [4096, 4096]);
  assert.deepEqual(parseCausalConfig({ model_type: "mistral", num_hidden_layers: 2, sliding_window: null }).layerWindows, [null, null]);
  assert.deepEqual(parseCausalConfig({ model_type: "llama", num_hidden_layers: 2, sliding_window: 4 }).layerWindows, [null, null]);
  assert.throws(() => parseCausalConfig({ model_type: "mistral", sliding_window: 0 }), /sliding_window/);
});

test("mistral-tiny: a query sees exactly the last sliding_window keys (a change outside the window changes nothing)", async () => {
  const { model, config } = await loadCausalPretrained(path.join(fixtures, "mistral-tiny"));
  const window = config.layerWindows[0]!;
  const ids = Int32Array.from(golden.models["mistral-tiny"].sequences[0].ids);
  const changed = ids.slice();
  changed[0] = (changed[0] + 1) % config.vocabSize;
  const run = (tokens: Int32Array) => tf.tidy(() => model.logits(model.hidden({ ids: tokens, batchSize: 1, length: tokens.length }, {})).arraySync());
  const [before, after] = [run(ids), run(changed)];
  // Two layers: token 0 reaches position t through at most 2·(window - 1) steps back.
  const reach = config.numLayers * (window - 1);
  assert.ok(maxAbsDiff(before[reach], after[reach]) > 1e-4, "within the layers' combined reach the change shows");
  for (let t = reach + 1; t < ids.length; t++) assert.ok(maxAbsDiff(before[t], after[t]) === 0, `position ${t} is outside every window of token 0`);
  model.dispose();
});

test("llama3 rope scaling keeps high frequencies, divides low ones by the factor and blends between", () => {
  const base = { model_type: "llama", hidden_size: 64, num_attention_heads: 2, rope_theta: 500000 };
  const plain = inverseFrequencies(parseCausalConfig(base));
  const scaled = inverseFrequencies(
    parseCausalConfig({ ...base, rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 512 } }),
  );
  const kinds = new Set<string>();
  for (let i = 0; i < plain.length; i++) {
    const wavelength = (2 * Math.PI) / plain[i];
    if (wavelength < 128) {
      assert.equal(scaled[i], plain[i]);
      kinds.add("kept");
    } else if (wavelength > 512) {
      assert.ok(Math.abs(scaled[i] - plain[i] / 8) <= 1e-6 * plain[i]);
      kinds.add("divided");
    } else {
      assert.ok(scaled[i] < plain[i] && scaled[i] > plain[i] / 8);
      kinds.add("blended");
    }
  }
  assert.deepEqual([...kinds].sort(), ["blended", "divided", "kept"]);
});

test("selectRows picks the labelled positions of each sequence and passes gradients back to exactly them", () => {
  const length = 4;
  const values = Array.from({ length: 3 * length * 5 }, (_, i) => Math.sin(i));
  const rows = [1, 2, 5, 9, 10, 11];
  tf.tidy(() => {
    const hidden = tf.tensor2d(values, [3 * length, 5]);
    assert.deepEqual(selectRows(hidden, rows, length).arraySync(), tf.gather(hidden, rows).arraySync());
    const weights = tf.tensor2d(Array.from({ length: rows.length * 5 }, (_, i) => i + 1), [rows.length, 5]);
    const gradient = tf.grad((h: tf.Tensor) => selectRows(h as tf.Tensor2D, rows, length).mul(weights).sum())(hidden).arraySync() as number[][];
    const weightRows = weights.arraySync();
    gradient.forEach((row, r) => assert.deepEqual(row, rows.includes(r) ? weightRows[rows.indexOf(r)] : [0, 0, 0, 0, 0]));
  });
});
