import assert from "node:assert/strict";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { ClassifierService, initBackend, ModelConfigError, readEncoderConfig } from "../../services/trainer/index.ts";
import { maxInputLength, parseEncoderConfig } from "../../services/trainer/tasks/classification/config.ts";
import { readSafetensors, writeSafetensors } from "../../services/trainer/safetensors.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
});

test("config parsing: architecture, LayerNorm eps, labels, RoBERTa's usable length", async () => {
  const distil = await readEncoderConfig(fixtureModel("distilbert-cls"));
  assert.equal(distil.architecture, "distilbert");
  assert.equal(distil.layerNormEps, 1e-12);
  assert.deepEqual(distil.labels, ["negative", "positive"]);
  const roberta = await readEncoderConfig(fixtureModel("roberta-base"));
  assert.equal(roberta.layerNormEps, 1e-5);
  assert.equal(roberta.labels, undefined, "a bare model has no head labels");
  assert.equal(maxInputLength(roberta), 64, "positions start at padding_idx + 1");
  const bert = parseEncoderConfig({ architectures: ["BertForMaskedLM"], hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16, max_position_embeddings: 16, classifier_dropout: 0.3 });
  assert.equal(bert.architecture, "bert");
  assert.equal(bert.classifierDropout, 0.3);
  assert.equal(bert.hasClassificationHead, false);
  assert.throws(() => parseEncoderConfig({ model_type: "t5" }), ModelConfigError);
});

test("a sharded checkpoint (model.safetensors.index.json) loads like a single file", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "sharded-"));
  const source = fixtureModel("bert-cls");
  for (const file of ["config.json", "tokenizer.json"]) await copyFile(path.join(source, file), path.join(dir, file));
  const tensors = [...(await readSafetensors(path.join(source, "model.safetensors")))];
  const half = Math.floor(tensors.length / 2);
  const shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
  await writeSafetensors(path.join(dir, shards[0]), new Map(tensors.slice(0, half)));
  await writeSafetensors(path.join(dir, shards[1]), new Map(tensors.slice(half)));
  await writeFile(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: Object.fromEntries(tensors.map(([name], i) => [name, shards[i < half ? 0 : 1]])) }));
  const single = await ClassifierService.load(source, "wasm");
  const sharded = await ClassifierService.load(dir, "wasm");
  const texts = ["hello world", "the film was dull"];
  assert.deepEqual((await sharded.predict(texts)).map((p) => p.logits), (await single.predict(texts)).map((p) => p.logits));
  single.dispose();
  sharded.dispose();
});

test("missing weights or tokenizer give a clear model error", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "broken-"));
  await copyFile(path.join(fixtureModel("bert-cls"), "config.json"), path.join(dir, "config.json"));
  await assert.rejects(ClassifierService.load(dir, "wasm"), (error: Error) => error instanceof ModelConfigError && /tokenizer\.json/.test(error.message));
  await copyFile(path.join(fixtureModel("bert-cls"), "tokenizer.json"), path.join(dir, "tokenizer.json"));
  await assert.rejects(ClassifierService.load(dir, "wasm"), (error: Error) => error instanceof ModelConfigError && /model\.safetensors/.test(error.message));
  await assert.rejects(ClassifierService.load(path.join(dir, "nope"), "wasm"), ModelConfigError);
  await writeFile(path.join(dir, "config.json"), "{ not json");
  await assert.rejects(ClassifierService.load(dir, "wasm"), (error: Error) => error instanceof ModelConfigError && /not valid JSON/.test(error.message));
});
