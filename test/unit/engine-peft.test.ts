import assert from "node:assert/strict";
import { cp, mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { ClassifierService, initBackend, loadAdapter, mergeAdapter, train } from "../../services/trainer/index.ts";
import { readSafetensors, writeSafetensors } from "../../services/trainer/safetensors.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

let work: string;
before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-peft-"));
});

async function trainAdapter(model: string, lora = { r: 4, alpha: 8, dropout: 0.1 }, maxSteps = 3): Promise<string> {
  const outDir = path.join(work, model, "adapter");
  await train({
    modelDir: fixtureModel(model),
    trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
    outDir,
    lora,
    hyper: { epochs: 1, batchSize: 16, learningRate: 2e-2, warmupRatio: 0, weightDecay: 0, maxSeqLength: 32, seed: 3, maxSteps },
    baseModelName: `fixtures/${model}`,
  });
  return outDir;
}

// What PEFT's save_pretrained writes for a SEQ_CLS LoRA on each architecture (names per docs/adapter-format.md).
const EXPECTED = {
  "distilbert-cls": {
    modules: (l: number) => [`distilbert.transformer.layer.${l}.attention.q_lin`, `distilbert.transformer.layer.${l}.attention.v_lin`],
    modulesToSave: ["pre_classifier", "classifier"],
    head: { "pre_classifier.weight": [32, 32], "pre_classifier.bias": [32], "classifier.weight": [2, 32], "classifier.bias": [2] },
  },
  "bert-base": {
    modules: (l: number) => [`bert.encoder.layer.${l}.attention.self.query`, `bert.encoder.layer.${l}.attention.self.value`],
    modulesToSave: ["classifier"],
    head: { "classifier.weight": [2, 32], "classifier.bias": [2] },
  },
  "roberta-base": {
    modules: (l: number) => [`roberta.encoder.layer.${l}.attention.self.query`, `roberta.encoder.layer.${l}.attention.self.value`],
    modulesToSave: ["classifier"],
    head: { "classifier.dense.weight": [32, 32], "classifier.dense.bias": [32], "classifier.out_proj.weight": [2, 32], "classifier.out_proj.bias": [2] },
  },
} as const;

for (const [model, expected] of Object.entries(EXPECTED)) {
  test(`${model}: adapter files use PEFT's key names, shapes and config fields`, async () => {
    const dir = await trainAdapter(model);
    const config = JSON.parse(await readFile(path.join(dir, "adapter_config.json"), "utf8"));
    assert.equal(config.peft_type, "LORA");
    assert.equal(config.task_type, "SEQ_CLS");
    assert.equal(config.r, 4);
    assert.equal(config.lora_alpha, 8);
    assert.equal(config.lora_dropout, 0.1);
    assert.deepEqual(config.target_modules, model.startsWith("distilbert") ? ["q_lin", "v_lin"] : ["query", "value"]);
    assert.deepEqual(config.modules_to_save, expected.modulesToSave);
    assert.equal(config.base_model_name_or_path, `fixtures/${model}`);
    for (const [field, value] of Object.entries({ bias: "none", fan_in_fan_out: false, inference_mode: true, init_lora_weights: true, use_rslora: false, use_dora: false, layers_to_transform: null, revision: null })) {
      assert.deepEqual(config[field], value, field);
    }
    const tensors = await readSafetensors(path.join(dir, "adapter_model.safetensors"));
    const expectedShapes: Record<string, number[]> = {};
    for (const layer of [0, 1]) {
      for (const module of expected.modules(layer)) {
        expectedShapes[`base_model.model.${module}.lora_A.weight`] = [4, 32];
        expectedShapes[`base_model.model.${module}.lora_B.weight`] = [32, 4];
      }
    }
    for (const [name, shape] of Object.entries(expected.head)) expectedShapes[`base_model.model.${name}`] = [...shape];
    assert.deepEqual(Object.fromEntries([...tensors].map(([k, v]) => [k, v.shape])), expectedShapes);
    const raw = await readFile(path.join(dir, "adapter_model.safetensors"));
    const header = JSON.parse(raw.subarray(8, 8 + Number(raw.readBigUInt64LE(0))).toString("utf8"));
    assert.ok(Object.entries(header).every(([k, v]) => k === "__metadata__" || (v as { dtype: string }).dtype === "F32"));
    const adapter = await loadAdapter(dir);
    assert.deepEqual(adapter.labels, ["negative", "positive"]);
    assert.equal(adapter.lora.size, 4);
  });
}

test("a merged Hugging Face folder predicts what base + adapter predicts", async () => {
  const adapterDir = await trainAdapter("roberta-base", { r: 4, alpha: 8, dropout: 0 }, 6);
  const adapter = await loadAdapter(adapterDir);
  assert.ok([...adapter.lora.values()].some(({ b }) => b.data.some((v) => v !== 0)), "training moved B away from zero");
  const mergedDir = path.join(work, "merged");
  await mergeAdapter(fixtureModel("roberta-base"), adapterDir, mergedDir);
  const mergedConfig = JSON.parse(await readFile(path.join(mergedDir, "config.json"), "utf8"));
  assert.deepEqual(mergedConfig.architectures, ["RobertaForSequenceClassification"]);
  assert.deepEqual(mergedConfig.id2label, { 0: "negative", 1: "positive" });
  const texts = ["the movie was great", "boring and dull film", "中文 naïve café!"];
  const base = await ClassifierService.load(fixtureModel("roberta-base"));
  const merged = await ClassifierService.load(mergedDir);
  const viaAdapter = await base.predict(texts, adapterDir);
  const viaMerge = await merged.predict(texts);
  viaAdapter.forEach((prediction, i) => {
    assert.equal(prediction.label, viaMerge[i].label);
    prediction.logits.forEach((logit, j) => assert.ok(Math.abs(logit - viaMerge[i].logits[j]) < 1e-5, `${logit} vs ${viaMerge[i].logits[j]}`));
    assert.ok(Math.abs(Object.values(prediction.scores).reduce((a, b) => a + b, 0) - 1) < 1e-6);
    assert.equal(prediction.score, Math.max(...Object.values(prediction.scores)));
  });
  await assert.rejects(base.predict(texts), /no classification head/);
  base.dispose();
  merged.dispose();
});

test("the classifier service swaps adapters on one base model", async () => {
  const first = await trainAdapter("distilbert-cls", { r: 2, alpha: 4, dropout: 0 }, 4);
  const service = await ClassifierService.load(fixtureModel("distilbert-cls"));
  const [plain] = await service.predict(["the plot was awful"]);
  const [adapted] = await service.predict(["the plot was awful"], first);
  const [plainAgain] = await service.predict(["the plot was awful"]);
  assert.deepEqual(plainAgain.logits, plain.logits);
  assert.notDeepEqual(adapted.logits, plain.logits);
  assert.ok(["negative", "positive"].includes(adapted.label));

  // The same adapter with one B matrix made for a wider layer is refused with its shapes, not run.
  const misfit = path.join(work, "misfit-adapter");
  await cp(first, misfit, { recursive: true });
  const weightsFile = path.join(misfit, "adapter_model.safetensors");
  const tensors = await readSafetensors(weightsFile);
  const [bKey, b] = [...tensors].find(([name]) => name.endsWith("lora_B.weight"))!;
  tensors.set(bKey, { shape: [2 * b.shape[0], b.shape[1]], data: new Float32Array(2 * b.data.length) });
  await writeSafetensors(weightsFile, tensors);
  await assert.rejects(service.predict(["the plot was awful"], misfit), { name: "AdapterError", message: /B 64×2\) do not fit this base model/ });
  service.dispose();
});
