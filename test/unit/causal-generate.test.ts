// Generation: KV cache equals no cache, seeded sampling, top-k/top-p, stop sequences, adapter swapping.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { GenerationError, GeneratorService, initBackend } from "../../services/trainer/index.ts";
import { sampleToken } from "../../services/trainer/tasks/causal-lm/generate.ts";
import { matchTargetModules, type LoraWeights } from "../../services/trainer/lora.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { AdapterError, saveAdapter } from "../../services/trainer/peft.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";

let fixtures: string;
let scratch: string;

before(async () => {
  await initBackend("wasm");
  fixtures = await causalFixtures();
  scratch = await mkdtemp(path.join(tmpdir(), "causal-generate-"));
});

/** A PEFT adapter with random non-zero A and B on the given targets. */
async function randomAdapter(model: string, targets: string[], seed: number): Promise<string> {
  const pretrained = await loadCausalPretrained(path.join(fixtures, model));
  const linears = pretrained.model.linearModules();
  const rng = new Rng(seed);
  const lora = new Map<string, LoraWeights>();
  for (const name of matchTargetModules(linears.map((l) => l.name), targets)) {
    const { inFeatures, outFeatures } = linears.find((l) => l.name === name)!;
    lora.set(name, {
      a: { shape: [4, inFeatures], data: rng.fill(4 * inFeatures, (r) => r.normal(0, 0.3)) },
      b: { shape: [outFeatures, 4], data: rng.fill(outFeatures * 4, (r) => r.normal(0, 0.3)) },
    });
  }
  pretrained.model.dispose();
  const dir = path.join(scratch, `${model}-${seed}`);
  await saveAdapter(dir, { settings: { r: 4, alpha: 8, dropout: 0, targetModules: targets, useRslora: false }, modulesToSave: [], lora, head: new Map(), labels: [], baseModelName: model, taskType: "CAUSAL_LM", fanInFanOut: model.startsWith("gpt2") }, {});
  return dir;
}

for (const [model, targets] of [["gpt2-tiny", ["c_attn", "c_fc"]], ["llama-tiny", ["q_proj", "k_proj", "v_proj", "down_proj"]], ["llama3-tiny", ["all-linear"]]] as const) {
  test(`${model}: generation with the KV cache equals generation without it, greedy and sampled`, async () => {
    const adapter = await randomAdapter(model, [...targets], 7);
    const service = await GeneratorService.load(path.join(fixtures, model), "wasm");
    const request = { prompt: "colour red is" };
    for (const options of [{ maxNewTokens: 12 }, { maxNewTokens: 12, temperature: 1.3, topK: 50, topP: 0.95, seed: 5 }]) {
      const cached = await service.generate(request, options, adapter);
      const uncached = await service.generate(request, { ...options, useCache: false }, adapter);
      assert.deepEqual(cached.tokenIds, uncached.tokenIds);
      assert.equal(cached.text, uncached.text);
      assert.ok(cached.tokenIds.length > 0);
    }
    service.dispose();
  });
}

test("seeded sampling repeats with its seed and varies across seeds", async () => {
  const service = await GeneratorService.load(path.join(fixtures, "gpt2-tiny"), "wasm");
  const options = { maxNewTokens: 16, temperature: 2 };
  const a = await service.generate({ prompt: "hello" }, { ...options, seed: 1 });
  const b = await service.generate({ prompt: "hello" }, { ...options, seed: 1 });
  const c = await service.generate({ prompt: "hello" }, { ...options, seed: 2 });
  assert.deepEqual(a.tokenIds, b.tokenIds);
  assert.notDeepEqual(a.tokenIds, c.tokenIds);
  service.dispose();
});

test("sampling: top-k 1 and a tiny top-p are greedy; temperature draws follow the softmax", () => {
  const logits = Float32Array.from([0.5, 2, 1, -1]);
  const rng = new Rng(3);
  for (let i = 0; i < 20; i++) {
    assert.equal(sampleToken(logits, 1, rng, 1), 1);
    assert.equal(sampleToken(logits, 1, rng, undefined, 0.01), 1);
  }
  // top-p 0.8 keeps the smallest head reaching 80%: tokens 1 and 2 (p ≈ 0.61 + 0.22).
  const kept = new Set(Array.from({ length: 300 }, () => sampleToken(logits, 1, rng, undefined, 0.8)));
  assert.deepEqual([...kept].sort(), [1, 2]);
  const counts = [0, 0, 0, 0];
  const draws = 4000;
  for (let i = 0; i < draws; i++) counts[sampleToken(logits, 1, rng)]++;
  const exps = Array.from(logits, Math.exp);
  const total = exps.reduce((a, b) => a + b, 0);
  exps.forEach((e, id) => assert.ok(Math.abs(counts[id] / draws - e / total) < 0.03, `token ${id}`));
});

test("stop sequences cut the text before them and end generation", async () => {
  const service = await GeneratorService.load(path.join(fixtures, "llama-tiny"), "wasm");
  const free = await service.generate({ prompt: "the" }, { maxNewTokens: 10 });
  assert.equal(free.finishReason, "length");
  assert.ok(free.text.length >= 4, free.text);
  const stop = free.text.slice(2, 4);
  const stopped = await service.generate({ prompt: "the" }, { maxNewTokens: 10, stop: [stop] });
  assert.equal(stopped.finishReason, "stop");
  assert.equal(stopped.text, free.text.slice(0, free.text.indexOf(stop)));
  assert.ok(stopped.tokenIds.length < free.tokenIds.length);
  service.dispose();
});

test("adapters swap over one loaded base; the base answers unchanged between them", async () => {
  const first = await randomAdapter("gpt2-tiny", ["c_attn"], 11);
  const second = await randomAdapter("gpt2-tiny", ["c_proj"], 12);
  const service = await GeneratorService.load(path.join(fixtures, "gpt2-tiny"), "wasm");
  const request = { messages: [{ role: "user" as const, content: "colour red" }] };
  const base = await service.generate(request, { maxNewTokens: 8 });
  const one = await service.generate(request, { maxNewTokens: 8 }, first);
  const two = await service.generate(request, { maxNewTokens: 8 }, second);
  assert.notDeepEqual(one.tokenIds, base.tokenIds);
  assert.notDeepEqual(two.tokenIds, one.tokenIds);
  assert.deepEqual((await service.generate(request, { maxNewTokens: 8 })).tokenIds, base.tokenIds);
  assert.deepEqual((await service.generate(request, { maxNewTokens: 8 }, first)).tokenIds, one.tokenIds);
  const llamaAdapter = await randomAdapter("llama-tiny", ["q_proj"], 13);
  await assert.rejects(service.generate(request, {}, llamaAdapter), AdapterError);
  service.dispose();
});

test("concurrent first uses of an adapter load it once, and dispose frees every tensor", async () => {
  const adapter = await randomAdapter("gpt2-tiny", ["c_fc"], 14);
  const tensorsBefore = tf.memory().numTensors;
  const service = await GeneratorService.load(path.join(fixtures, "gpt2-tiny"), "wasm");
  const request = { prompt: "colour blue" };
  const [first, second] = await Promise.all([service.generate(request, { maxNewTokens: 4 }, adapter), service.generate(request, { maxNewTokens: 4 }, adapter)]);
  assert.deepEqual(first, second);
  service.dispose();
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(tf.memory().numTensors, tensorsBefore);
});

test("bad generation options are refused with GenerationError", async () => {
  const service = await GeneratorService.load(path.join(fixtures, "gpt2-tiny"), "wasm");
  for (const options of [{ maxNewTokens: 0 }, { temperature: -1 }, { topK: 0 }, { topP: 1.5 }, { stop: [""] }]) {
    await assert.rejects(service.generate({ prompt: "x" }, options), GenerationError);
  }
  await assert.rejects(service.generate({}, {}), GenerationError);
  service.dispose();
});
