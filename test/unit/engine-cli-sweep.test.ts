// The engine CLI's `sweep` (one adapter per rank, the table and the pick of sweep-pick.ts) and
// `compose` (adapter folders combined as the service composes them), run as a user runs them.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile } from "node:fs/promises";
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
  work = await mkdtemp(path.join(tmpdir(), "engine-cli-sweep-"));
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
