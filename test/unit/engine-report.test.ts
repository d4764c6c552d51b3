// The final evaluation report and the model card of a trained classifier: metrics.json's `report` holds the
// adapter's and the base model's detail (confusion matrix, per class, ECE, per group with the largest gap),
// and README.md is a Hugging Face model card whose front matter parses as YAML and whose numbers are
// metrics.json's. The validation set plants a bias: one group's labels are flipped, so a model that learned
// the task fails that group, and the report and card must say so.
import assert from "node:assert/strict";
import { cp, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { parse as parseYaml } from "yaml";
import { initBackend, train } from "../../services/trainer/index.ts";
import { CARD_DECIMALS, formatNumber } from "../../services/trainer/model-card.ts";
import type { ClassificationDetail, FinalReport } from "../../services/trainer/report.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

let work: string;
let modelDir: string;

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-report-"));
  // A copy of the base folder whose README.md states a license, as Hugging Face folders do.
  modelDir = path.join(work, "base");
  await cp(fixtureModel("distilbert-base"), modelDir, { recursive: true });
  await writeFile(path.join(modelDir, "README.md"), "---\nlicense: apache-2.0\nlanguage: en\n---\n# tiny\n");
  const lines = async (file: string) => (await readFile(path.join(FIXTURES_DIR, file), "utf8")).trim().split("\n").map((line) => JSON.parse(line) as { text: string; label: string });
  const trainRecords = (await lines("sentiment-train.jsonl")).map((record, i) => ({ ...record, group: i % 3 === 0 ? "east" : "west" }));
  const flip = (label: string) => (label === "positive" ? "negative" : "positive");
  const validation = (await lines("sentiment-validation.jsonl")).map((record, i) => (i % 2 === 0 ? { ...record, group: "plain" } : { ...record, label: flip(record.label), group: "flipped" }));
  await writeFile(path.join(work, "train.jsonl"), trainRecords.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await writeFile(path.join(work, "validation.jsonl"), validation.map((r) => JSON.stringify(r)).join("\n") + "\n");
});

test("a classifier's metrics.json carries the report, adapter and base, with per-group metrics that expose a planted bias; README.md is its model card", async () => {
  const outDir = path.join(work, "adapter");
  const result = await train({
    modelDir,
    trainFile: path.join(work, "train.jsonl"),
    validationFile: path.join(work, "validation.jsonl"),
    outDir,
    baseModelName: "tiny-distilbert",
    lora: { r: 8, alpha: 16, dropout: 0 },
    hyper: { epochs: 30, batchSize: 16, learningRate: 1e-2, warmupRatio: 0.1, maxSeqLength: 32, seed: 7, evalEverySteps: 120 },
  });
  const file = JSON.parse(await readFile(path.join(outDir, "metrics.json"), "utf8"));
  const report = file.report as FinalReport;
  assert.deepEqual(result.report, report, "the result carries the report metrics.json holds");
  const adapter = report.adapter as ClassificationDetail;
  const base = report.base as ClassificationDetail;

  for (const detail of [adapter, base]) {
    assert.deepEqual(detail.labels, ["negative", "positive"]);
    assert.equal(detail.confusionMatrix.flat().reduce((a, b) => a + b, 0), 64, "every validation example is counted once");
    assert.equal(detail.perClass.negative.support + detail.perClass.positive.support, 64);
    assert.deepEqual(Object.keys(detail.groups!), ["flipped", "plain"]);
    assert.equal(detail.groups!.plain.count + detail.groups!.flipped.count, 64);
  }
  // Flat numbers and detail agree.
  assert.equal(file.metrics.ece, adapter.ece);
  assert.equal(file.baseline.ece, base.ece);
  assert.equal(file.metrics["f1/positive"], adapter.perClass.positive.f1);
  assert.equal(file.metrics.accuracy, (adapter.confusionMatrix[0][0] + adapter.confusionMatrix[1][1]) / 64);

  // The model learned the task, so it gets the plain group right and the flipped one wrong.
  const { plain, flipped } = adapter.groups!;
  assert.ok(plain.accuracy > 0.85 && flipped.accuracy < 0.15, `plain ${plain.accuracy}, flipped ${flipped.accuracy}`);
  assert.equal(adapter.largestGroupGap!.groups[0], "plain");
  assert.equal(adapter.largestGroupGap!.groups[1], "flipped");
  assert.ok(adapter.largestGroupGap!.gap > 0.7, `gap ${adapter.largestGroupGap!.gap}`);
  assert.equal(file.metrics.largest_group_gap, adapter.largestGroupGap!.gap);
  assert.deepEqual(file.data.validation_group_counts, { flipped: 32, plain: 32 });
  assert.deepEqual(file.data.train_group_counts, { east: 64, west: 128 });

  // The model card: YAML front matter as Hugging Face reads it, then Markdown.
  const card = await readFile(path.join(outDir, "README.md"), "utf8");
  const match = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(card);
  assert.ok(match, "front matter between --- lines");
  const front = parseYaml(match[1]) as Record<string, unknown>;
  assert.equal(front.base_model, "tiny-distilbert");
  assert.equal(front.library_name, "peft");
  assert.equal(front.pipeline_tag, "text-classification");
  assert.equal(front.license, "apache-2.0", "the base folder's license");
  assert.deepEqual(front.tags, ["lora", "peft", "text-classification", "distilbert"]);
  const [entry] = front["model-index"] as { results: { metrics: { name: string; value: number }[] }[] }[];
  const indexed = Object.fromEntries(entry.results[0].metrics.map(({ name, value }) => [name, value]));
  assert.deepEqual(indexed, file.metrics, "model-index holds metrics.json's metrics exactly");

  const body = match[2];
  for (const [name, value] of Object.entries(file.metrics as Record<string, number>)) {
    assert.ok(body.includes(`| \`${name}\` | ${formatNumber(value)} | ${formatNumber(file.baseline[name])} |`), `row of ${name}`);
  }
  assert.equal(formatNumber(0.123456), (0.123456).toFixed(CARD_DECIMALS));
  assert.ok(body.includes(`| plain | 32 | ${formatNumber(plain.accuracy)} | ${formatNumber(base.groups!.plain.accuracy)} |`));
  assert.ok(body.includes(`| negative | ${adapter.confusionMatrix[0].join(" | ")} |`), "confusion matrix row");
  assert.match(body, /\*\*It serves groups unequally\*\*: `(accuracy|macro_f1)` differs by [0-9.]+ between plain and flipped/);
  for (const section of ["## Intended use", "## Limitations", "## Training data", "## Settings", "## Evaluation", "## Training"]) assert.ok(body.includes(section), section);
  assert.ok(body.includes("| `hyperparameters.epochs` | `30` |"), "resolved settings");
  assert.ok(body.includes(`| last | ${file.loss_curve.at(-1).step} | ${formatNumber(file.loss_curve.at(-1).loss)} |`), "training curve summary");
});

test("without validation data there is no report, and the card says nothing was evaluated", async () => {
  const outDir = path.join(work, "unevaluated");
  const result = await train({
    modelDir: fixtureModel("distilbert-base"),
    trainFile: path.join(work, "train.jsonl"),
    outDir,
    lora: { r: 4, alpha: 8, dropout: 0 },
    hyper: { epochs: 1, batchSize: 32, maxSeqLength: 16 },
  });
  assert.equal(result.report, undefined);
  const file = JSON.parse(await readFile(path.join(outDir, "metrics.json"), "utf8"));
  assert.equal(file.report, undefined);
  const card = await readFile(path.join(outDir, "README.md"), "utf8");
  const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(card)![1]) as Record<string, unknown>;
  assert.equal(front.license, undefined, "the fixture folder states no license");
  assert.equal(front["model-index"], undefined);
  assert.ok(card.includes("No validation data was given, so the adapter was not evaluated."));
});
