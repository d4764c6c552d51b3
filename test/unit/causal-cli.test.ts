// The CLI on a decoder: train (chat data, causal metrics in the progress output) and generate.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { promisify } from "node:util";
import { causalFixtures } from "../helpers/causal-fixtures.ts";

const run = promisify(execFile);
const CLI = path.join(import.meta.dirname, "..", "..", "services", "trainer", "cli.ts");
const cli = (...args: string[]) => run(process.execPath, ["--import", "tsx", CLI, ...args], { env: { ...process.env, TRAINER_BACKEND: "wasm" } });

let fixtures: string;
let work: string;
before(async () => {
  fixtures = await causalFixtures();
  work = await mkdtemp(path.join(tmpdir(), "causal-cli-"));
});

test("train on chat data reports perplexity; generate prints text or JSON with the adapter", async () => {
  const model = path.join(fixtures, "llama-tiny");
  const out = path.join(work, "adapter");
  const trained = await cli("train", "--model", model, "--data", path.join(fixtures, "chat-train.jsonl"), "--validation", path.join(fixtures, "chat-validation.jsonl"),
    "--out", out, "--epochs", "1", "--batch-size", "8", "--lr", "1e-2", "--eval-every", "1");
  assert.match(trained.stderr, /eval @1: loss [\d.]+ perplexity [\d.]+ next_token_accuracy [\d.]+ \(base: loss/);
  assert.equal(JSON.parse(trained.stdout).outcome, "completed");
  assert.equal(JSON.parse(await readFile(path.join(out, "adapter_config.json"), "utf8")).task_type, "CAUSAL_LM");

  const messages = path.join(work, "messages.json");
  await writeFile(messages, JSON.stringify([{ role: "user", content: "colour red" }]));
  const generated = await cli("generate", "--model", model, "--adapter", out, "--messages", messages, "--max-new-tokens", "5", "--json");
  const result = JSON.parse(generated.stdout);
  assert.equal(typeof result.text, "string");
  assert.ok(result.tokenIds.length >= 1 && result.tokenIds.length <= 5);
  const plain = await cli("generate", "--model", model, "--prompt", "the", "--max-new-tokens", "3", "--temperature", "0.8", "--seed", "4");
  assert.ok(plain.stdout.endsWith("\n"));
});

test("generate usage errors exit with status 2", async () => {
  const model = path.join(fixtures, "gpt2-tiny");
  await assert.rejects(cli("generate", "--model", model), (error: { code: number; stderr: string }) => error.code === 2 && /exactly one of --prompt/.test(error.stderr));
  await assert.rejects(cli("generate", "--model", model, "--prompt", "x", "--top-k", "many"), (error: { code: number; stderr: string }) => error.code === 2 && /--top-k needs a number/.test(error.stderr));
});
