import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
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
