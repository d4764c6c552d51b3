// Adapter composition (services/trainer/lora-compose.ts) on adapters trained on the tiny DistilBERT
// fixture: linear with weights (1, 0) reproduces the first adapter's logits; cat's update is the sum
// of the sources' updates; svd at full rank gives cat's logits, svd (1, 0) gives linear's, and on
// adapters of disjoint modules svd at full rank gives linear's for any weights.
import assert from "node:assert/strict";
import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { parse as parseYaml } from "yaml";
import { ClassifierService, initBackend, loadAdapter, saveAdapter, train, type Adapter } from "../../services/trainer/index.ts";
import { composeAdapters, type CompositionOptions } from "../../services/trainer/index.ts";
import { loraScale } from "../../services/trainer/lora.ts";
import { formatNumber } from "../../services/trainer/model-card.ts";

import { svdOfProduct } from "../../services/trainer/low-rank-svd.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

const texts = ["the movie was great and fun", "this film is boring and dull", "i hate the plot", "wonderful actors"];
let work: string;
let service: ClassifierService;
const dirs: Record<string, string> = {};
const adapters: Record<string, Adapter> = {};

async function trainAdapter(name: string, r: number, seed: number, targetModules?: string[]): Promise<void> {
  dirs[name] = path.join(work, name);
  await train({
    modelDir: fixtureModel("distilbert-cls"),
    trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
    outDir: dirs[name],
    lora: { r, alpha: 2 * r + 1, dropout: 0, ...(targetModules ? { targetModules } : {}) },
    hyper: { epochs: 1, batchSize: 16, learningRate: 5e-2, warmupRatio: 0, weightDecay: 0, maxSeqLength: 32, seed, maxSteps: 3 },
    baseModelName: "fixtures/distilbert-cls",
  });
  adapters[name] = await loadAdapter(dirs[name]);
}

async function composedLogits(name: string, sources: Adapter[], options: CompositionOptions): Promise<{ logits: number[][]; adapter: Adapter }> {
  const adapter = composeAdapters(sources, options);
  const dir = path.join(work, name);
  await saveAdapter(dir, adapter, {});
  return { logits: (await service.predict(texts, dir)).map((prediction) => prediction.logits), adapter };
}

const logitsOf = async (dir: string) => (await service.predict(texts, dir)).map((prediction) => prediction.logits);

function assertClose(actual: number[][], expected: number[][], tolerance: number, what: string): void {
  const worst = Math.max(...actual.flatMap((row, i) => row.map((value, j) => Math.abs(value - expected[i][j]))));
  assert.ok(worst <= tolerance, `${what}: largest logit difference ${worst} > ${tolerance}`);
}

/** scale · B · A of one module, as float64 [out × in]. */
function delta(adapter: Adapter, module: string): Float64Array {
  const { a, b } = adapter.lora.get(module)!;
  const [out, r, inFeatures] = [b.shape[0], a.shape[0], a.shape[1]];
  const scale = loraScale(adapter.settings);
  const result = new Float64Array(out * inFeatures);
  for (let i = 0; i < out; i++) for (let k = 0; k < r; k++) for (let j = 0; j < inFeatures; j++) result[i * inFeatures + j] += scale * b.data[i * r + k] * a.data[k * inFeatures + j];
  return result;
}

/** The composed adapter's README.md: front matter that parses, whose model-index and tables hold metrics.json's numbers. */
async function assertCardMatches(dir: string, metrics: { metrics: Record<string, number>; baseline: Record<string, number>; composition: { type: string; weights: number[] } }, sourceNames: string[]): Promise<void> {
  const card = await readFile(path.join(dir, "README.md"), "utf8");
  const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(card)![1]) as { base_model: string; library_name: string; pipeline_tag: string; tags: string[]; "model-index": { results: { metrics: { name: string; value: number }[] }[] }[] };
  assert.equal(front.base_model, "fixtures/distilbert-cls");
  assert.equal(front.library_name, "peft");
  assert.equal(front.pipeline_tag, "text-classification");
  for (const tag of ["lora", "peft", "adapter-composition"]) assert.ok(front.tags.includes(tag), `tag ${tag} in ${front.tags}`);
  const indexed = Object.fromEntries(front["model-index"][0].results[0].metrics.map((metric) => [metric.name, metric.value]));
  assert.deepEqual(indexed, metrics.metrics, "the model-index holds metrics.json's metrics exactly");
  assert.match(card, new RegExp(`Type \`${metrics.composition.type}\``));
  metrics.composition.weights.forEach((weight, index) => assert.ok(card.includes(`| ${index + 1} | \`${sourceNames[index]}\` | ${formatNumber(weight)} |`), `source ${index + 1}'s row`));
  for (const [key, value] of Object.entries(metrics.metrics)) {
    const [source, metric] = key.split(".");
    const section = card.split(`### Source ${source.slice("source_".length)}`)[1].split("###")[0];
    assert.ok(section.includes(`| \`${metric}\` | ${formatNumber(value)} | ${formatNumber(metrics.baseline[key])} |`), `${key} row in\n${section}`);
  }
  for (const heading of ["## How it was composed", "## Intended use", "## Limitations", "## Evaluation"]) assert.ok(card.includes(heading), heading);
}

describe("adapter composition", () => {
  before(async () => {
    await initBackend("wasm");
    await engineFixtures();
    work = await mkdtemp(path.join(tmpdir(), "engine-compose-"));
    service = await ClassifierService.load(fixtureModel("distilbert-cls"), "wasm");
    await trainAdapter("first", 4, 1);
    await trainAdapter("second", 4, 2);
    await trainAdapter("small", 2, 3);
    await trainAdapter("queries", 4, 4, ["q_lin"]);
    await trainAdapter("values", 4, 5, ["v_lin"]);
  });

  it("linear with weights (1, 0) reproduces the first adapter's logits within 1e-5", async () => {
    const { logits, adapter } = await composedLogits("linear-1-0", [adapters.first, adapters.second], { type: "linear", weights: [1, 0] });
    assert.equal(adapter.settings.r, 4);
    assert.equal(adapter.settings.alpha, 4, "PEFT sets lora_alpha = r: the composed adapter's scale is 1");
    assertClose(logits, await logitsOf(dirs.first), 1e-5, "linear (1, 0)");
  });

  it("cat's update is the weighted sum of the sources' updates within 1e-5, at every module", async () => {
    const weights = [0.7, 1.3];
    const cat = composeAdapters([adapters.first, adapters.small], { type: "cat", weights });
    assert.equal(cat.settings.r, 6, "cat's rank is the sum of the ranks");
    for (const module of cat.lora.keys()) {
      const combined = delta(cat, module);
      const [one, two] = [delta(adapters.first, module), delta(adapters.small, module)];
      const worst = Math.max(...combined.map((value, i) => Math.abs(value - (weights[0] * one[i] + weights[1] * two[i]))));
      assert.ok(worst <= 1e-5, `${module}: ${worst}`);
    }
  });

  it("svd at full rank gives cat's logits within 1e-4, and svd (1, 0) gives linear's", async () => {
    const sources = [adapters.first, adapters.small];
    const weights = [0.7, 1.3];
    const cat = await composedLogits("cat", sources, { type: "cat", weights });
    const svd = await composedLogits("svd-full", sources, { type: "svd", weights, svdRank: 6 });
    assertClose(svd.logits, cat.logits, 1e-4, "svd at full rank against cat");
    const svdOne = await composedLogits("svd-1-0", [adapters.first, adapters.second], { type: "svd", weights: [1, 0], svdRank: 8 });
    assertClose(svdOne.logits, await logitsOf(dirs.first), 1e-4, "svd (1, 0) against linear (1, 0), i.e. the first adapter");
    // Truncated below the rank, svd keeps the largest singular directions: close, not equal.
    const truncated = composeAdapters(sources, { type: "svd", weights, svdRank: 2 });
    assert.equal(truncated.settings.r, 2);
  });

  it("svd at full rank equals linear within 1e-4 where linear is the weighted sum of the updates: adapters on disjoint modules", async () => {
    // PEFT's linear multiplies the weighted sums of A and of B, so where two adapters share a module
    // its update carries cross terms B₁A₂ that svd (the weighted sum of the updates) has not; on
    // modules that only one source adapts the two agree.
    const sources = [adapters.queries, adapters.values];
    const weights = [0.6, 1.4];
    const linear = await composedLogits("linear-disjoint", sources, { type: "linear", weights });
    const svd = await composedLogits("svd-disjoint", sources, { type: "svd", weights, svdRank: 4 });
    assert.deepEqual(linear.adapter.settings.targetModules, ["q_lin", "v_lin"]);
    assertClose(svd.logits, linear.logits, 1e-4, "svd at full rank against linear");
    for (const module of linear.adapter.lora.keys()) {
      const [fromLinear, fromSvd] = [delta(linear.adapter, module), delta(svd.adapter, module)];
      const worst = Math.max(...fromSvd.map((value, i) => Math.abs(value - fromLinear[i])));
      assert.ok(worst <= 1e-5, `${module}: update differs by ${worst}`);
    }
    const base = await logitsOf(dirs.queries);
    assert.ok(Math.max(...linear.logits.flatMap((row, i) => row.map((value, j) => Math.abs(value - base[i][j])))) > 1e-3, "the composition is not just one source");
  });

  it("averages classifier heads with normalised weights and refuses what cannot be composed", () => {
    const composed = composeAdapters([adapters.first, adapters.second], { type: "linear", weights: [3, 1] });
    const name = [...adapters.first.head.keys()][0];
    const [one, two, mixed] = [adapters.first, adapters.second, composed].map((adapter) => adapter.head.get(name)!.data);
    assert.ok(Math.abs(mixed[0] - (0.75 * one[0] + 0.25 * two[0])) < 1e-6);
    assert.throws(() => composeAdapters([adapters.first, adapters.small], { type: "linear", weights: [1, 1] }), /one rank/);
    assert.throws(() => composeAdapters([adapters.first, adapters.second], { type: "linear", weights: [1, -1] }), /weights ≥ 0/);
    assert.throws(() => composeAdapters([adapters.first, { ...adapters.second, labels: ["x", "y"] }], { type: "cat", weights: [1, 1] }), /different labels/);
    assert.throws(() => composeAdapters([adapters.first, adapters.second], { type: "cat", weights: [1] }), /2 adapters but 1 weights/);
  });

  it("a composition run writes the adapter and evaluates it on each source's validation set", async () => {
    const source = (name: string, seed: number) => ({
      adapterDir: dirs[name],
      trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
      validationSplit: 0.25,
      lora: { r: 4, alpha: 9, dropout: 0 },
      hyper: { epochs: 1, batchSize: 16, maxSeqLength: 32, seed },
    });
    const outDir = path.join(work, "run");
    const result = await train({
      modelDir: fixtureModel("distilbert-cls"),
      trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
      outDir,
      lora: {},
      hyper: {},
      baseModelName: "fixtures/distilbert-cls",
      composition: { type: "linear", weights: [1, 0], sources: [source("first", 1), source("second", 2)] },
    });
    assert.equal(result.outcome, "completed");
    for (const key of ["source_1.accuracy", "source_1.macro_f1", "source_1.loss", "source_2.accuracy"]) {
      assert.ok(Number.isFinite(result.metrics[key]) && Number.isFinite(result.baseline[key]), key);
    }
    assertClose(await logitsOf(outDir), await logitsOf(dirs.first), 1e-5, "the run's adapter");
    const metrics = JSON.parse(await readFile(path.join(outDir, "metrics.json"), "utf8"));
    assert.deepEqual(metrics.composition, { type: "linear", weights: [1, 0], svdRank: null, sources: 2 });
    await assertCardMatches(outDir, metrics, ["first", "second"]);

    const stopped = await train(
      { modelDir: fixtureModel("distilbert-cls"), trainFile: path.join(FIXTURES_DIR, "sentiment-train.jsonl"), outDir: path.join(work, "stopped"), lora: {}, hyper: {}, composition: { type: "cat", weights: [1, 1], sources: [source("first", 1), source("second", 2)] } },
      { stopRequested: () => "cancel" },
    );
    assert.equal(stopped.outcome, "cancelled", "a stop request is honoured before the evaluations");
  });

  it("GPT-2 (fan_in_fan_out): composing with weights (1, 0) scores on the first source's validation set what its training scored; svd at full rank scores what cat scores", async () => {
    const causal = path.join(await causalFixtures(), "gpt2-tiny");
    const data = path.join(await causalFixtures(), "completion-train.jsonl");
    const hyper = { epochs: 1, batchSize: 4, learningRate: 5e-2, warmupRatio: 0, maxSeqLength: 32, maxSteps: 3 };
    const source = (name: string, seed: number, r: number) => ({ adapterDir: path.join(work, name), trainFile: data, validationSplit: 0.25, lora: { r, alpha: 2 * r, dropout: 0 }, hyper: { ...hyper, seed } });
    const trained = [];
    for (const [name, seed, r] of [["gpt2-a", 1, 4], ["gpt2-b", 2, 2]] as const) {
      const { adapterDir, ...rest } = source(name, seed, r);
      trained.push(await train({ modelDir: causal, outDir: adapterDir, ...rest }));
    }
    const sources = [source("gpt2-a", 1, 4), source("gpt2-b", 2, 2)];
    const run = (name: string, composition: CompositionOptions) => train({ modelDir: causal, trainFile: data, outDir: path.join(work, name), lora: {}, hyper: {}, composition: { ...composition, sources } });
    const kept = await run("gpt2-cat-1-0", { type: "cat", weights: [1, 0] });
    for (const metric of ["loss", "next_token_accuracy"]) {
      assert.ok(Math.abs(kept.metrics[`source_1.${metric}`] - trained[0].metrics[metric]) < 1e-5, `${metric}: ${kept.metrics[`source_1.${metric}`]} vs ${trained[0].metrics[metric]}`);
    }
    const cat = await run("gpt2-cat", { type: "cat", weights: [0.6, 0.9] });
    const svd = await run("gpt2-svd", { type: "svd", weights: [0.6, 0.9], svdRank: 6 });
    for (const key of Object.keys(cat.metrics)) assert.ok(Math.abs(cat.metrics[key] - svd.metrics[key]) < 1e-4, `${key}: ${cat.metrics[key]} vs ${svd.metrics[key]}`);
    assert.equal(JSON.parse(await readFile(path.join(work, "gpt2-svd", "adapter_config.json"), "utf8")).fan_in_fan_out, true);
  });

  it("the low-rank SVD reconstructs B·A", () => {
    const [m, k, n] = [7, 3, 5];
    const b = Float64Array.from({ length: m * k }, (_, i) => Math.sin(i + 1));
    const a = Float64Array.from({ length: k * n }, (_, i) => Math.cos(2 * i + 1));
    const { u, s, v } = svdOfProduct(b, a, m, k, n);
    assert.ok(s[0] >= s[1] && s[1] >= s[2]);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let expected = 0;
      let actual = 0;
      for (let p = 0; p < k; p++) {
        expected += b[i * k + p] * a[p * n + j];
        actual += u[i * k + p] * s[p] * v[j * k + p];
      }
      assert.ok(Math.abs(expected - actual) < 1e-12);
    }
  });
});
