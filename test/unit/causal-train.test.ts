// Acceptance for causal LM fine-tuning: a tiny GPT-2 (completions) and a tiny Llama (chat) learn a
// pattern well below the base model's validation loss, then greedy generation writes the trained
// replies; the adapter is a PEFT CAUSAL_LM folder; checkpoints resume to the same adapter; tiny Qwen2 and
// Mistral train too.
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { chatRecords, completionRecords, PATTERN_PAIRS } from "../fixtures/make-causal-fixtures.ts";
import { GeneratorService, initBackend, train, type HyperparameterOptions } from "../../services/trainer/index.ts";
import type { CausalDetail, FinalReport } from "../../services/trainer/report.ts";
import { readSafetensors } from "../../services/trainer/safetensors.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";

let fixtures: string;
let scratch: string;

before(async () => {
  await initBackend("wasm");
  fixtures = await causalFixtures();
  scratch = await mkdtemp(path.join(tmpdir(), "causal-train-"));
});

const HYPER: HyperparameterOptions = { epochs: 40, batchSize: 8, learningRate: 2e-2, warmupRatio: 0, weightDecay: 0, maxSeqLength: 64, seed: 1 };

test("GPT-2, completions, all-linear: validation loss falls far below the base, generation writes the trained completions", async () => {
  const outDir = path.join(scratch, "gpt2-adapter");
  const result = await train({
    modelDir: path.join(fixtures, "gpt2-tiny"),
    trainFile: path.join(fixtures, "completion-train.jsonl"),
    validationFile: path.join(fixtures, "completion-validation.jsonl"),
    outDir,
    lora: { r: 8, alpha: 16, dropout: 0, targetModules: ["all-linear"] },
    hyper: HYPER,
    baseModelName: "tiny-gpt2",
  });
  assert.equal(result.outcome, "completed");
  assert.deepEqual(Object.keys(result.metrics).sort(), ["bleu", "exact_match", "loss", "next_token_accuracy", "perplexity", "rouge_l"]);
  assert.ok(result.metrics.loss < 0.2 * result.baseline.loss, `loss ${result.metrics.loss} vs base ${result.baseline.loss}`);
  assert.ok(Math.abs(result.metrics.perplexity - Math.exp(result.metrics.loss)) < 1e-9);
  assert.ok(result.metrics.next_token_accuracy > result.baseline.next_token_accuracy);

  // The final report: greedy generations of the first evalGenerations (4) validation prompts, base and adapter.
  const report = JSON.parse(await readFile(path.join(outDir, "metrics.json"), "utf8")).report as FinalReport;
  assert.deepEqual(result.report, report);
  const adapter = report.adapter as CausalDetail;
  const baseDetail = report.base as CausalDetail;
  assert.equal(adapter.loss, result.metrics.loss);
  assert.equal(adapter.perplexity, result.metrics.perplexity);
  assert.equal(adapter.tokenAccuracy, result.metrics.next_token_accuracy);
  assert.equal(baseDetail.loss, result.baseline.loss);
  assert.deepEqual(report.samples!.map((s) => [s.prompt, s.reference]), completionRecords().slice(0, 4).map((r) => [r.prompt, r.completion]));
  assert.deepEqual(report.samples!.map((s) => s.adapter), completionRecords().slice(0, 4).map((r) => r.completion), "the adapter writes the trained completions");
  assert.deepEqual(report.samples!.map((s) => s.base), baseDetail.generation!.samples.map((s) => s.output));
  assert.equal(adapter.generation!.exactMatch, 1);
  assert.equal(result.metrics.exact_match, 1);
  assert.equal(result.metrics.rouge_l, 1);
  assert.ok(result.baseline.exact_match < 1 && result.baseline.rouge_l < 1, `base ${result.baseline.exact_match}, ${result.baseline.rouge_l}`);
  // One-word replies have no 4-gram: corpus BLEU-4 is 0 for both, as sacreBLEU has it.
  assert.equal(result.metrics.bleu, 0);
  const card = await readFile(path.join(outDir, "README.md"), "utf8");
  assert.match(card, /^---\nbase_model: "tiny-gpt2"\nlibrary_name: "peft"\npipeline_tag: "text-generation"\n/);
  assert.ok(card.includes("### Sample generations"));
  assert.ok(card.includes("| colour red is |  apple | "), "the first sample's row");

  const config = JSON.parse(await readFile(path.join(outDir, "adapter_config.json"), "utf8"));
  assert.equal(config.task_type, "CAUSAL_LM");
  assert.equal(config.fan_in_fan_out, true);
  assert.equal(config.modules_to_save, null);
  assert.deepEqual(config.target_modules, ["c_attn", "c_fc", "c_proj"]);
  const tensors = await readSafetensors(path.join(outDir, "adapter_model.safetensors"));
  assert.equal(tensors.size, 2 * 4 * 2, "A and B for 4 linears in each of 2 layers");
  assert.deepEqual(tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight")!.shape, [8, 32]);
  assert.deepEqual(tensors.get("base_model.model.transformer.h.0.attn.c_attn.lora_B.weight")!.shape, [96, 8]);
  assert.deepEqual(tensors.get("base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight")!.shape, [8, 128]);

  const service = await GeneratorService.load(path.join(fixtures, "gpt2-tiny"), "wasm");
  for (const record of completionRecords()) {
    const adapted = await service.generate({ prompt: record.prompt }, { maxNewTokens: 6 }, outDir);
    assert.equal(adapted.text, record.completion, `prompt "${record.prompt}"`);
    assert.equal(adapted.finishReason, "eos");
  }
  const base = await service.generate({ prompt: completionRecords()[0].prompt }, { maxNewTokens: 6 });
  assert.notEqual(base.text, completionRecords()[0].completion);
  service.dispose();
});

test("Llama, chat with the model's template, default q_proj/v_proj: assistant replies are learned", async () => {
  const outDir = path.join(scratch, "llama-adapter");
  const result = await train({
    modelDir: path.join(fixtures, "llama-tiny"),
    trainFile: path.join(fixtures, "chat-train.jsonl"),
    validationFile: path.join(fixtures, "chat-validation.jsonl"),
    outDir,
    lora: { r: 8, alpha: 16, dropout: 0 },
    hyper: { ...HYPER, epochs: 60 },
  });
  assert.ok(result.metrics.loss < 0.2 * result.baseline.loss, `loss ${result.metrics.loss} vs base ${result.baseline.loss}`);
  // Held-out chat prompts: the conversation before the last assistant turn; that turn is the reference.
  assert.deepEqual(result.report!.samples!.map((s) => [s.prompt, s.reference]), PATTERN_PAIRS.slice(0, 4).map(([colour, thing]) => [`system: answer in one word\nuser: colour ${colour}`, thing]));
  assert.ok(result.report!.samples!.every((s) => s.adapter.trim().startsWith(s.reference)), JSON.stringify(result.report!.samples));
  const config = JSON.parse(await readFile(path.join(outDir, "adapter_config.json"), "utf8"));
  assert.deepEqual(config.target_modules, ["q_proj", "v_proj"]);
  assert.equal(config.fan_in_fan_out, false);
  const tensors = await readSafetensors(path.join(outDir, "adapter_model.safetensors"));
  // GQA: k/v projections are narrower than q.
  assert.deepEqual(tensors.get("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")!.shape, [16, 8]);
  assert.deepEqual(tensors.get("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight")!.shape, [32, 8]);

  const service = await GeneratorService.load(path.join(fixtures, "llama-tiny"), "wasm");
  for (const [index, record] of chatRecords().entries()) {
    const reply = await service.generate({ messages: record.messages.slice(0, 2) }, { maxNewTokens: 6 }, outDir);
    assert.equal(reply.text.trim(), PATTERN_PAIRS[index][1]);
  }
  service.dispose();
});

test("a run stopped at a checkpoint and resumed ends with the adapter of an uninterrupted run", async () => {
  const common = {
    modelDir: path.join(fixtures, "llama3-tiny"),
    trainFile: path.join(fixtures, "chat-train.jsonl"),
    lora: { r: 4, alpha: 8, dropout: 0.1 },
    hyper: { ...HYPER, epochs: 2, batchSize: 4 },
  };
  const straight = await train({ ...common, outDir: path.join(scratch, "straight") });
  let steps = 0;
  const stopped = await train(
    { ...common, outDir: path.join(scratch, "unused"), checkpointDir: path.join(scratch, "checkpoints") },
    { onStep: () => void steps++, stopRequested: () => (steps === 3 ? "checkpoint" : "none") },
  );
  assert.equal(stopped.outcome, "checkpointed");
  const resumed = await train({ ...common, outDir: path.join(scratch, "resumed"), resumeFrom: stopped.lastCheckpoint!.dir });
  assert.equal(resumed.step, straight.step);
  const a = await readSafetensors(path.join(scratch, "straight", "adapter_model.safetensors"));
  const b = await readSafetensors(path.join(scratch, "resumed", "adapter_model.safetensors"));
  assert.deepEqual([...a.keys()], [...b.keys()]);
  for (const [key, value] of a) {
    const other = b.get(key)!.data;
    for (let i = 0; i < value.data.length; i++) assert.ok(Math.abs(value.data[i] - other[i]) < 1e-6, key);
  }
});

test("packing (here with trainOnInputs) concatenates examples into full-length blocks", async () => {
  const result = await train({
    modelDir: path.join(fixtures, "gpt2-bare"),
    trainFile: path.join(fixtures, "completion-train.jsonl"),
    outDir: path.join(scratch, "packed"),
    lora: { r: 2, alpha: 4, dropout: 0 },
    hyper: { ...HYPER, epochs: 1, maxSeqLength: 32, packing: true, trainOnInputs: true },
  });
  const metrics = JSON.parse(await readFile(path.join(scratch, "packed", "metrics.json"), "utf8"));
  assert.equal(result.outcome, "completed");
  assert.ok(metrics.train_examples < 24, `24 records packed into ${metrics.train_examples} blocks of 32 tokens`);
});

test("Qwen2 (ChatML chat, q/k/v biases) and Mistral (completions longer than its sliding window) train with their default targets", async () => {
  for (const [name, data] of [["qwen2-tiny", "chat"], ["mistral-tiny", "completion"]] as const) {
    const outDir = path.join(scratch, `${name}-adapter`);
    const result = await train({
      modelDir: path.join(fixtures, name),
      trainFile: path.join(fixtures, `${data}-train.jsonl`),
      validationFile: path.join(fixtures, `${data}-validation.jsonl`),
      outDir,
      lora: { r: 8, alpha: 16, dropout: 0 },
      hyper: { ...HYPER, epochs: 40 },
    });
    assert.ok(result.metrics.loss < 0.3 * result.baseline.loss, `${name}: loss ${result.metrics.loss} vs base ${result.baseline.loss}`);
    const config = JSON.parse(await readFile(path.join(outDir, "adapter_config.json"), "utf8"));
    assert.deepEqual(config.target_modules, ["q_proj", "v_proj"]);
  }
});
