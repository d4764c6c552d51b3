// The memory planner (services/trainer/memory-plan.ts): parameter counts from config.json alone against
// published model sizes and the fixtures' checkpoints, the bytes of each weight storage mode, the LoRA
// state against the engine's own initialisation, and how the plan moves with batch and sequence.
import assert from "node:assert/strict";
import path from "node:path";
import { readFile } from "node:fs/promises";
import { before, test } from "node:test";
import { initBackend } from "../../services/trainer/backend.ts";
import {
  ACTIVATION_FLOATS, frozenWeightBytes, modelParameters, NF4_BLOCK, planTrainingMemory, RUNTIME_OVERHEAD_BYTES, FRAGMENTATION, WASM_HEAP_BUDGET,
} from "../../services/trainer/memory-plan.ts";
import { initLoraModules } from "../../services/trainer/lora.ts";
import { resolveJobSettings } from "../../services/trainer/settings.ts";
import { readSafetensors } from "../../services/trainer/safetensors.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { CAUSAL_SPECS } from "../fixtures/make-causal-fixtures.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

let causal: string;

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  causal = await causalFixtures();
});

const config = async (dir: string) => JSON.parse(await readFile(path.join(dir, "config.json"), "utf8")) as Record<string, unknown>;
const storedParameters = async (dir: string) => [...(await readSafetensors(path.join(dir, "model.safetensors"))).values()].reduce((n, t) => n + t.data.length, 0);

test("parameter counts from config.json alone match published model sizes", () => {
  const published: [string, Record<string, unknown>, number][] = [
    ["Qwen2-0.5B", { model_type: "qwen2", hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936, tie_word_embeddings: true }, 494_032_768],
    ["Llama-2-7b", { model_type: "llama", hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 32, vocab_size: 32000 }, 6_738_415_616],
    ["Mistral-7B-v0.1", { model_type: "mistral", hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000 }, 7_241_732_096],
    ["gpt2", { model_type: "gpt2", n_embd: 768, n_layer: 12, n_head: 12, vocab_size: 50257, n_positions: 1024 }, 124_439_808],
    // BertModel (109,482,240) plus the two-label classifier the planner assumes.
    ["bert-base-uncased", { model_type: "bert", hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, max_position_embeddings: 512, vocab_size: 30522 }, 109_482_240 + 768 * 2 + 2],
  ];
  for (const [name, raw, parameters] of published) assert.equal(modelParameters(raw).checkpointParameters, parameters, name);
});

test("parameter counts equal every causal fixture's checkpoint exactly", async () => {
  for (const spec of CAUSAL_SPECS) {
    const dir = path.join(causal, spec.name);
    assert.equal(modelParameters(await config(dir)).checkpointParameters, await storedParameters(dir), spec.name);
  }
  // Encoder fixtures with a head are counted within the few parameters a head's label count changes.
  for (const name of ["distilbert-cls", "bert-cls", "roberta-cls"]) {
    const dir = fixtureModel(name);
    const planned = modelParameters(await config(dir)).checkpointParameters;
    const stored = await storedParameters(dir);
    assert.ok(Math.abs(planned - stored) <= 0.02 * stored, `${name}: planned ${planned}, stored ${stored}`);
  }
});

test("storage modes: float32 for none; int8 a byte plus a channel scale; nf4 half a byte plus block absmax, smaller with double quantization", () => {
  const raw = { model_type: "llama", hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32, vocab_size: 32000 };
  const model = modelParameters(raw);
  const linearWeights = model.linears.reduce((n, l) => n + l.inFeatures * l.outFeatures, 0);
  const channels = model.linears.reduce((n, l) => n + l.outFeatures, 0);
  const other = model.otherParameters * 4;
  assert.equal(frozenWeightBytes(model, "none"), linearWeights * 4 + other);
  assert.equal(frozenWeightBytes(model, "int8"), linearWeights + channels * 4 + other);
  const blocks = model.linears.reduce((n, l) => n + Math.ceil((l.inFeatures * l.outFeatures) / NF4_BLOCK), 0);
  assert.equal(frozenWeightBytes(model, "nf4"), linearWeights / 2 + blocks * 4 + other);
  assert.ok(frozenWeightBytes(model, "nf4", true) < frozenWeightBytes(model, "nf4"));
  // Embeddings and the head stay float32: a 7B model's nf4 weights are ~4 GiB, not 3.4.
  assert.ok(frozenWeightBytes(model, "nf4") / 2 ** 30 > 4.3 && frozenWeightBytes(model, "nf4") / 2 ** 30 < 4.5);
});

test("LoRA parameters equal what the engine initialises for the job's targets, and the plan grows with batch and length", async () => {
  const dir = path.join(causal, "qwen2-tiny");
  const raw = await config(dir);
  const { model } = await loadCausalPretrained(dir);
  for (const targetModules of [["q_proj", "v_proj"], ["all-linear"]]) {
    const settings = resolveJobSettings({ lora: { r: 4, targetModules } }, "qwen2");
    const engine = [...initLoraModules(model.linearModules(), settings.lora, 1, "qwen2").values()].reduce((n, { a, b }) => n + a.data.length + b.data.length, 0);
    const plan = planTrainingMemory(raw, { r: 4, targetModules, batchSize: 2, maxSeqLength: 16, storage: "none" });
    assert.equal(plan.trainableParameters, engine);
    assert.equal(plan.trainableBytes, engine * 16);
  }
  model.dispose();
  const plan = (batchSize: number, maxSeqLength: number) => planTrainingMemory(raw, { r: 8, targetModules: ["q_proj"], batchSize, maxSeqLength, storage: "none" });
  const base = plan(2, 64);
  assert.ok(plan(4, 64).activationBytes > 1.9 * base.activationBytes);
  assert.ok(plan(2, 128).activationBytes > 2 * base.activationBytes, "attention scores grow with the square of the length");
  const working = Math.max(base.weightsBytes + base.trainableBytes + base.activationBytes, base.weightsBytes + base.loadingBytes);
  assert.equal(base.overheadBytes, Math.round(working * FRAGMENTATION) + RUNTIME_OVERHEAD_BYTES);
  assert.equal(base.bytes, working + base.overheadBytes);
});

test("quantized storage lowers the plan of a large model by its frozen weights", () => {
  const raw = { model_type: "mistral", hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000 };
  const request = { r: 16, targetModules: ["q_proj", "v_proj"], batchSize: 1, maxSeqLength: 512 };
  const [none, int8, nf4] = (["none", "int8", "nf4"] as const).map((storage) => planTrainingMemory(raw, { ...request, storage }));
  assert.ok(none.bytes > int8.bytes && int8.bytes > nf4.bytes);
  assert.equal(none.trainableBytes, nf4.trainableBytes);
  assert.equal(none.activationBytes, nf4.activationBytes);
  assert.equal(nf4.storage, "nf4");
});

test("gradient checkpointing: auto turns on when the step would overflow the wasm heap, and then layer inputs replace all but one layer's intermediates", () => {
  const tinyLlama = { model_type: "llama", hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000 };
  const request = { r: 16, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"], storage: "nf4" as const };
  const [auto, on, off] = (["auto", "on", "off"] as const).map((gradientCheckpointing) => planTrainingMemory(tinyLlama, { ...request, batchSize: 4, maxSeqLength: 256, gradientCheckpointing }));
  assert.ok(off.activationBytes > WASM_HEAP_BUDGET);
  assert.deepEqual(auto, on);
  assert.equal(on.gradientCheckpointing, true);
  assert.equal(off.gradientCheckpointing, false);
  const { hidden, intermediate, heads, layers, vocab } = modelParameters(tinyLlama);
  const tokens = 4 * 256;
  const floats = ACTIVATION_FLOATS.llama_fused;
  const oneLayer = tokens * (floats.hidden * hidden + floats.intermediate * intermediate + floats.score * heads * 256);
  assert.equal(on.activationBytes, 4 * (tokens * hidden * layers + oneLayer + tokens * vocab * floats.logits));
  assert.equal(off.activationBytes, 4 * (oneLayer * layers + tokens * vocab * floats.logits));
  // A small micro-batch fits: auto keeps every intermediate (no recomputation).
  assert.equal(planTrainingMemory(tinyLlama, { ...request, batchSize: 1, maxSeqLength: 16 }).gradientCheckpointing, false);
  // Without the addon the linears are in the heap too and the plain ops keep more: the plan says so.
  const plain = planTrainingMemory(tinyLlama, { ...request, storage: "none", batchSize: 1, maxSeqLength: 16, nativeKernels: false });
  assert.equal(plain.gradientCheckpointing, true);
});

test("gradient checkpointing stays off for GPT-2 small at batch 4 × 256 (bench:train's workload fits the heap)", () => {
  const gpt2 = { model_type: "gpt2", n_embd: 768, n_layer: 12, n_head: 12, n_positions: 1024, vocab_size: 50257 };
  const plan = planTrainingMemory(gpt2, { r: 16, targetModules: ["c_attn"], batchSize: 4, maxSeqLength: 256, storage: "none" });
  assert.equal(plan.gradientCheckpointing, false);
});

test("gradient checkpointing applies to causal LMs: an encoder's plan never uses it and a job asking for it is refused", () => {
  const distilbert = { model_type: "distilbert", dim: 768, hidden_dim: 3072, n_layers: 6, n_heads: 12, vocab_size: 30522, max_position_embeddings: 512 };
  const plan = planTrainingMemory(distilbert, { r: 8, targetModules: ["q_lin"], batchSize: 512, maxSeqLength: 512, storage: "none", gradientCheckpointing: "auto" });
  assert.equal(plan.gradientCheckpointing, false);
  assert.throws(() => resolveJobSettings({ hyperparameters: { gradientCheckpointing: "on" } }, "distilbert"), /gradientCheckpointing applies to causal LMs only/);
  assert.equal(resolveJobSettings({}, "llama").hyperparameters.gradientCheckpointing, "auto");
});
