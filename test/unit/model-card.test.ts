// The model card generator on its own: front matter that stays valid YAML whatever the names hold, the
// license read from the base folder, and the data-quality findings a preflight hands the engine.
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { parse as parseYaml } from "yaml";
import { baseLicense, modelCard, toYaml, type MetricsFile } from "../../services/trainer/model-card.ts";
import type { Adapter } from "../../services/trainer/peft.ts";

const settings = { lora: { r: 4, alpha: 8, dropout: 0, targetModules: ["q_lin"], useRslora: false }, hyperparameters: { epochs: 1 } } as unknown as MetricsFile["settings"];

test("front matter is valid YAML for any text, nested lists and maps included", () => {
  const value = { base_model: 'org/"odd": name #1\n', tags: ["a: b", "- c"], "model-index": [{ name: "x", results: [{ metrics: [{ type: "f1/pos|neg", value: 0.5 }] }] }], empty: [], none: null };
  assert.deepEqual(parseYaml(toYaml(value).join("\n")), value);
});

test("the license comes from the base folder's README front matter, else its config.json", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "model-card-"));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ model_type: "bert", license: "mit" }));
  assert.equal(await baseLicense(dir), "mit");
  await writeFile(path.join(dir, "README.md"), '---\nlanguage: en\nlicense: "llama3"\n---\n');
  assert.equal(await baseLicense(dir), "llama3");
});

test("data-quality findings, label counts and unevaluated runs are stated", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "model-card-"));
  await writeFile(path.join(dir, "config.json"), JSON.stringify({ model_type: "bert" }));
  const adapter = { settings: settings.lora, modulesToSave: [], lora: new Map(), head: new Map(), labels: ["neg", "pos"], baseModelName: "bert-tiny" } as Adapter;
  const metricsFile: MetricsFile = {
    labels: ["neg", "pos"], metrics: {}, baseline: {}, adapter_step: 3, steps: 3, epochs: 1, train_examples: 10, validation_examples: 0, tokens_seen: 99,
    backend: "cpu", settings, evaluations: [], loss_curve: [{ step: 1, loss: 0.7, learning_rate: 0.1 }], data: { train_label_counts: { neg: 3, pos: 7 } },
  };
  const findings = [
    { code: "duplicate_text", severity: "warning", count: 12, lines: Array.from({ length: 12 }, (_, i) => i + 1), message: "same text | twice" },
    { code: "short_text", severity: "info", count: 1, lines: [4], message: "one word" },
  ];
  const card = await modelCard({ adapter, metricsFile, modelDir: dir, dataQuality: { findings } });
  const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(card)![1]) as Record<string, unknown>;
  assert.deepEqual(front, { base_model: "bert-tiny", library_name: "peft", pipeline_tag: "text-classification", tags: ["lora", "peft", "text-classification", "bert"] });
  assert.ok(card.includes("| warning | duplicate_text | 12 | 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, … | same text \\| twice |"), card);
  assert.ok(card.includes("| info | short_text | 1 | 4 | one word |"));
  assert.ok(card.includes("The training data has 1 data-quality finding(s) above: duplicate_text."), "info findings are not limitations");
  assert.ok(card.includes("| neg | 3 |\n| pos | 7 |"));
  assert.ok(card.includes("Nothing was evaluated: there was no validation data."));
});
