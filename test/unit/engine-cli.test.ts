import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
import { pickSmallestWithinTolerance } from "../../services/trainer/index.ts";
import { engineFixtures, fixtureModel, FIXTURES_DIR } from "../helpers/engine-fixtures.ts";

const run = promisify(execFile);
const CLI = path.join(import.meta.dirname, "..", "..", "services", "trainer", "cli.ts");
const cli = (...args: string[]) => run(process.execPath, ["--import", "tsx", CLI, ...args], { env: { ...process.env, TRAINER_BACKEND: "wasm" } });

let work: string;
before(async () => {
  await engineFixtures();
  work = await mkdtemp(path.join(tmpdir(), "engine-cli-"));
});

test("train writes a PEFT adapter and reports progress on stderr; predict prints labels, scores and logits", async () => {
  const out = path.join(work, "adapter");
  const trained = await cli("train", "--model", fixtureModel("distilbert-base"), "--data", path.join(FIXTURES_DIR, "sentiment-train.jsonl"),
    "--validation", path.join(FIXTURES_DIR, "sentiment-validation.jsonl"), "--out", out, "--max-steps", "4", "--batch-size", "8", "--lr", "1e-2", "--lora-r", "4");
  const summary = JSON.parse(trained.stdout);
  assert.equal(summary.outcome, "completed");
  assert.equal(summary.step, 4);
  assert.match(trained.stderr, /backend: wasm/);
  assert.match(trained.stderr, /\] 4\/4 loss \d+\.\d{4} lr \S+ \d+ tok\/s ETA 0m00s/);
  assert.match(trained.stderr, /eval @4: loss/);
  const config = JSON.parse(await readFile(path.join(out, "adapter_config.json"), "utf8"));
  assert.equal(config.r, 4);

  const file = path.join(work, "texts.jsonl");
  await writeFile(file, `${JSON.stringify({ text: "boring film" })}\n`);
  const predicted = await cli("predict", "--model", fixtureModel("distilbert-base"), "--adapter", out, "--text", "the movie was great", "--file", file, "--json");
  const predictions = JSON.parse(predicted.stdout);
  assert.deepEqual(predictions.map((p: { text: string }) => p.text), ["the movie was great", "boring film"]);
  for (const p of predictions) {
    assert.ok(["negative", "positive"].includes(p.label));
    assert.equal(p.logits.length, 2);
    assert.ok(Math.abs(p.scores.negative + p.scores.positive - 1) < 1e-9);
  }
  const plain = await cli("predict", "--model", fixtureModel("distilbert-base"), "--adapter", out, "--text", "hello");
  assert.match(plain.stdout, /^(negative|positive)\t\d\.\d{4}\tlogits \[-?\d+\.\d{4}, -?\d+\.\d{4}\]\thello\n$/);
});

test("usage errors exit with status 2 and a message", async () => {
  await assert.rejects(cli("predict", "--model", fixtureModel("bert-cls")), (error: { code: number; stderr: string }) => error.code === 2 && /--text/.test(error.stderr));
  await assert.rejects(cli("frobnicate"), (error: { code: number; stderr: string }) => error.code === 2 && /Usage:/.test(error.stderr));
  await assert.rejects(cli("train", "--model", fixtureModel("bert-cls"), "--data", "x", "--out", work, "--epochs", "many"), (error: { code: number; stderr: string }) => error.code === 2 && /--epochs needs a number/.test(error.stderr));
  await assert.rejects(cli("predict", "--model", fixtureModel("bert-cls"), "--text", "hi", "--backend", "gpu"), (error: { code: number; stderr: string }) => error.code === 2 && /--backend must be one of auto, tensorflow, wasm-blas, wasm, cpu/.test(error.stderr));
});

test("sweep trains one adapter per rank and picks the smallest within tolerance; compose combines two of them", async () => {
  const out = path.join(work, "sweep");
  const swept = await cli("sweep", "--model", fixtureModel("distilbert-cls"), "--data", path.join(FIXTURES_DIR, "sentiment-train.jsonl"), "--validation-split", "0.25",
    "--out", out, "--ranks", "2,4", "--tolerance", "0.05", "--max-steps", "2", "--batch-size", "8", "--lr", "1e-2", "--max-seq-length", "16");
  const report = JSON.parse(swept.stdout) as { metric: string; table: { rank: number; alpha: number; adapterDir: string; trainableParameters: number; adapterBytes: number; metrics: Record<string, number> }[]; pick: { adapterDir: string; reason: string } };
  assert.equal(report.metric, "macro_f1");
  assert.deepEqual(report.table.map((row) => [row.rank, row.alpha]), [[2, 4], [4, 8]]);
  assert.ok(report.table[1].trainableParameters > report.table[0].trainableParameters);
  assert.ok(report.table[1].adapterBytes > report.table[0].adapterBytes);
  const expected = pickSmallestWithinTolerance(report.table.map((row) => ({ jobId: row.adapterDir, rank: row.rank, targetModules: ["default"], size: row.trainableParameters, value: row.metrics.macro_f1 })), "macro_f1", true, 0.05)!;
  assert.equal(report.pick.adapterDir, expected.jobId);
  assert.equal(report.pick.reason, expected.reason);

  const composed = path.join(work, "composed");
  await cli("compose", "--adapter", path.join(out, "r-2"), "--adapter", path.join(out, "r-4"), "--weights", "1,0.5", "--type", "cat", "--out", composed);
  const config = JSON.parse(await readFile(path.join(composed, "adapter_config.json"), "utf8"));
  assert.equal(config.r, 6);
  assert.equal(config.lora_alpha, 6);
  await assert.rejects(cli("compose", "--adapter", path.join(out, "r-2"), "--adapter", path.join(out, "r-4"), "--type", "linear", "--out", path.join(work, "bad")), (error: { code: number; stderr: string }) => error.code === 1 && /one rank/.test(error.stderr));
});
