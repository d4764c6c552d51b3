// bench:predict --peer: inference throughput of the engine against PyTorch (bench/peer_torch_predict.py)
// on the bench workloads (bench/workloads.ts), fp32 on both sides:
//   - prediction: texts/s classifying one batch of 64 texts of 128 tokens, DistilBERT shape;
//   - generation: new tokens/s of greedy decoding with a key/value cache, one sequence, GPT-2-small
//     shape, a 32-token prompt and 64 new tokens (no early end: EOS is not a stop).
// Each engine backend and the peer run in their own processes; rounds alternate the sides.
//
//   npm run bench:predict -- --peer [--rounds 2] [--backends wasm-blas] [--repeats 3] [--new-tokens 64]
import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import { loadConfig } from "../services/common/config.ts";
import { initBackend, type BackendChoice } from "../services/trainer/backend.ts";
import { generateTokens } from "../services/trainer/tasks/causal-lm/generate.ts";
import { loadCausalPretrained } from "../services/trainer/tasks/causal-lm/load.ts";
import { computeLogits } from "../services/trainer/tasks/classification/inference.ts";
import { initialHead, loadPretrained } from "../services/trainer/tasks/classification/load.ts";
import { DEFAULT_SHAPES, ensureWorkload, LABELS } from "./workloads.ts";

export interface InferenceOptions {
  backends: string[];
  rounds: number;
  repeats: number;
  newTokens: number;
  child?: string;
  task?: string;
}

const PREDICT_BATCH = 64;
const PROMPT_TOKENS = 32;
const benchDir = path.dirname(fileURLToPath(import.meta.url));

interface Measurement {
  side: string;
  task: "predict" | "generate";
  perSecond: number;
  peakRssMiB: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function readRecords(dir: string): Promise<Record<string, string>[]> {
  return (await readFile(path.join(dir, "train.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
}

/** Seconds per call of `run` after one warm-up call, the median of `repeats`. */
function timed(repeats: number, run: () => void): number {
  run();
  const seconds: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    run();
    seconds.push((performance.now() - start) / 1000);
  }
  return median(seconds);
}

async function predictThroughput(repeats: number): Promise<number> {
  const dir = await ensureWorkload({ ...DEFAULT_SHAPES.distilbert, examples: PREDICT_BATCH });
  const pretrained = await loadPretrained(dir);
  const overrides = new Map<string, tf.Tensor>();
  for (const [name, { shape, data }] of initialHead(pretrained, LABELS.length, 1)) overrides.set(name, tf.tensor(data, shape));
  const inputs = (await readRecords(dir)).map((record) => pretrained.tokenizer.encode(record.text, DEFAULT_SHAPES.distilbert.seq));
  const seconds = timed(repeats, () => computeLogits(pretrained.model, pretrained.tokenizer, inputs, { overrides }, PREDICT_BATCH));
  return inputs.length / seconds;
}

async function generateThroughput(repeats: number, newTokens: number): Promise<number> {
  const dir = await ensureWorkload({ ...DEFAULT_SHAPES.gpt2, examples: DEFAULT_SHAPES.gpt2.batch });
  const { model, tokenizer } = await loadCausalPretrained(dir);
  const [record] = await readRecords(dir);
  const promptIds = tokenizer.idsOf(record.prompt + record.completion).slice(0, PROMPT_TOKENS);
  const detokenizer = { decode: (ids: number[]) => tokenizer.decode(ids) };
  let generated = 0;
  const seconds = timed(repeats, () => {
    generated = generateTokens(model, promptIds, {}, [], detokenizer, { maxNewTokens: newTokens, temperature: 0, useCache: true }).tokenIds.length;
  });
  return generated / seconds;
}

async function runChild(options: InferenceOptions): Promise<void> {
  const info = await initBackend(options.child as BackendChoice, { blasAddonPath: loadConfig().trainerBlasAddon });
  const task = options.task as Measurement["task"];
  const perSecond = task === "predict" ? await predictThroughput(options.repeats) : await generateThroughput(options.repeats, options.newTokens);
  const result: Measurement = { side: info.name, task, perSecond, peakRssMiB: process.resourceUsage().maxRSS / 1024 };
  console.log(JSON.stringify(result));
}

function lastJson(stdout: string): Record<string, unknown> | undefined {
  const last = stdout.trim().split("\n").at(-1) ?? "";
  return last.startsWith("{") ? JSON.parse(last) : undefined;
}

function runEngine(backend: string, task: string, options: InferenceOptions): Measurement | string {
  const args = ["--import", "tsx", path.join(benchDir, "predict.ts"), "--peer", "--child", backend, "--task", task, "--repeats", String(options.repeats), "--new-tokens", String(options.newTokens)];
  const child = spawnSync(process.execPath, args, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 24 });
  return (lastJson(child.stdout) as Measurement | undefined) ?? `${task} ${backend}: failed (exit ${child.status})`;
}

function runPeer(task: string, options: InferenceOptions): Measurement | string {
  const args = [path.join(benchDir, "peer_torch_predict.py"), "--task", task, "--repeats", String(options.repeats), "--new-tokens", String(options.newTokens)];
  const run = spawnSync("/usr/bin/python3", args, { encoding: "utf8" });
  const json = lastJson(run.stdout ?? "");
  if (run.status !== 0 || !json) return `PyTorch peer failed: ${(run.stderr || run.stdout).trim().split("\n").at(-1)}`;
  return { side: "pytorch", task: task as Measurement["task"], perSecond: json.per_second as number, peakRssMiB: json.peak_rss_mib as number };
}

export async function runInferenceBench(options: InferenceOptions): Promise<void> {
  if (options.child) return runChild(options);
  await ensureWorkload({ ...DEFAULT_SHAPES.distilbert, examples: PREDICT_BATCH });
  await ensureWorkload({ ...DEFAULT_SHAPES.gpt2, examples: DEFAULT_SHAPES.gpt2.batch });
  console.log(`environment: OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? "(unset)"}; fp32 on every side`);
  console.log(`predict: DistilBERT shape (6 layers), one batch of ${PREDICT_BATCH} texts × 128 tokens, texts/s`);
  console.log(`generate: GPT-2 small shape, greedy with a KV cache, batch 1, ${PROMPT_TOKENS}-token prompt, ${options.newTokens} new tokens, new tokens/s`);
  const best = new Map<string, Measurement>();
  const keep = (m: Measurement | string) => {
    if (typeof m === "string") return console.log(m);
    console.log(`  ${m.task} ${m.side}: ${m.perSecond.toFixed(2)}/s, ${m.peakRssMiB.toFixed(0)} MiB`);
    const key = `${m.task}/${m.side}`;
    const previous = best.get(key);
    if (!previous || m.perSecond > previous.perSecond) best.set(key, { ...m, peakRssMiB: Math.max(m.peakRssMiB, previous?.peakRssMiB ?? 0) });
  };
  for (let round = 1; round <= options.rounds; round++) {
    console.log(`round ${round}`);
    for (const task of ["predict", "generate"]) {
      for (const backend of options.backends) keep(runEngine(backend, task, options));
      keep(runPeer(task, options));
    }
  }
  console.log(`\n${"task".padEnd(9)} ${"side".padEnd(10)} ${"per second".padStart(11)} ${"peak RSS MiB".padStart(13)} ${"÷ torch".padStart(8)}`);
  for (const m of best.values()) {
    const peer = best.get(`${m.task}/pytorch`);
    const ratio = peer ? (m.perSecond / peer.perSecond).toFixed(2) : "-";
    console.log(`${m.task.padEnd(9)} ${m.side.padEnd(10)} ${m.perSecond.toFixed(2).padStart(11)} ${m.peakRssMiB.toFixed(0).padStart(13)} ${ratio.padStart(8)}`);
  }
}
