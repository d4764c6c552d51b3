// Training throughput and memory of the engine next to PyTorch (bench/peer_torch_lora.py) on one workload:
// a DistilBERT-shaped encoder (6 layers, d 768, 12 heads, FFN 3072, vocab 30522) with random
// weights, batch 8 × 128 tokens, LoRA r 16 / alpha 32 on q_lin and v_lin, a trained head, AdamW.
// Each backend runs in its own child process, so peak RSS is per backend; --peer runs the
// PyTorch script in the same run and prints the ratios (installing Debian's python3-torch when
// /usr/bin/python3 cannot import torch).
//
//   npm run bench:train -- [--layers 6] [--steps 6] [--rounds 1] [--peer] [--full] [--verbose] [--backends wasm-blas,wasm,cpu]
//
// LoRA mode runs the engine's own train() (from a Hugging Face folder written to the temp dir);
// --full (for the memory comparison) trains every weight with the engine's model, loss and AdamW.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { wordPieceTokenizer } from "../test/fixtures/make-fixtures.ts";
import { loadConfig } from "../services/common/config.ts";
import { initBackend, type BackendChoice, type BackendName } from "../services/trainer/backend.ts";
import { encodeExamples } from "../services/trainer/tasks/classification/data.ts";
import { crossEntropy } from "../services/trainer/losses.ts";
import { initialHead, loadPretrained } from "../services/trainer/tasks/classification/load.ts";
import { loadBlasAddon } from "../services/trainer/native/blas.ts";
import { AdamW, ADAMW_DEFAULTS } from "../services/trainer/optim.ts";
import { Rng } from "../services/trainer/rng.ts";
import { serializeSafetensors, type NamedArray } from "../services/trainer/safetensors.ts";
import { train } from "../services/trainer/train.ts";
import { matmulTable } from "./matmul.ts";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const peerScript = path.join(repoRoot, "bench", "peer_torch_lora.py");
const PYTHON = "/usr/bin/python3";
const LABELS = ["negative", "positive"];

const { values: options } = parseArgs({
  options: {
    layers: { type: "string", default: "6" },
    steps: { type: "string", default: "6" },
    batch: { type: "string", default: "8" },
    seq: { type: "string", default: "128" },
    peer: { type: "boolean", default: false },
    full: { type: "boolean", default: false },
    verbose: { type: "boolean", default: false },
    backends: { type: "string" },
    rounds: { type: "string", default: "1" },
    child: { type: "string" },
  },
});
const layers = Number(options.layers);
const steps = Number(options.steps);
const batchSize = Number(options.batch);
const seqLength = Number(options.seq);
const rounds = Number(options.rounds);
const mode = options.full ? "full" : "lora";

interface ChildResult {
  backend: BackendName;
  stepSeconds: number[];
  tokensPerStep: number;
  peakRssMiB: number;
  profile?: string;
}

// --- the model folder and data -----------------------------------------------------------------

/** A DistilBertModel folder with random weights (std 0.02, as HF initialises) and a WordPiece tokenizer. */
async function writeBenchModel(dir: string): Promise<void> {
  const [d, ffn, vocab] = [768, 3072, 30522];
  const rng = Rng.derive(7, layers);
  const tensors = new Map<string, NamedArray>();
  // Uniform with the standard deviation of HF's normal(0, 0.02): speed does not depend on the law.
  const bound = 0.02 * Math.sqrt(3);
  const matrix = (name: string, shape: number[]) =>
    tensors.set(name, { shape, data: rng.fill(shape[0] * (shape[1] ?? 1), (r) => r.uniform(-bound, bound)) });
  const constant = (name: string, size: number, value: number) => tensors.set(name, { shape: [size], data: new Float32Array(size).fill(value) });
  const linear = (name: string, out: number, inFeatures: number) => {
    matrix(`${name}.weight`, [out, inFeatures]);
    constant(`${name}.bias`, out, 0);
  };
  const layerNorm = (name: string) => {
    constant(`${name}.weight`, d, 1);
    constant(`${name}.bias`, d, 0);
  };
  matrix("embeddings.word_embeddings.weight", [vocab, d]);
  matrix("embeddings.position_embeddings.weight", [512, d]);
  layerNorm("embeddings.LayerNorm");
  for (let layer = 0; layer < layers; layer++) {
    const p = `transformer.layer.${layer}`;
    for (const m of ["q_lin", "k_lin", "v_lin", "out_lin"]) linear(`${p}.attention.${m}`, d, d);
    layerNorm(`${p}.sa_layer_norm`);
    linear(`${p}.ffn.lin1`, ffn, d);
    linear(`${p}.ffn.lin2`, d, ffn);
    layerNorm(`${p}.output_layer_norm`);
  }
  const tokenizer = wordPieceTokenizer();
  // No dropout anywhere: the PyTorch peer has none either.
  const config = {
    architectures: ["DistilBertModel"], model_type: "distilbert", vocab_size: vocab, dim: d, n_layers: layers, n_heads: 12,
    hidden_dim: ffn, max_position_embeddings: 512, activation: "gelu", dropout: 0, attention_dropout: 0,
    seq_classif_dropout: 0, pad_token_id: 0, initializer_range: 0.02, sinusoidal_pos_embds: false,
  };
  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(tmp, { recursive: true });
  await writeFile(path.join(tmp, "config.json"), JSON.stringify(config, null, 2));
  await writeFile(path.join(tmp, "tokenizer.json"), JSON.stringify(tokenizer.json));
  await writeFile(path.join(tmp, "model.safetensors"), serializeSafetensors(tensors));
  // Texts long enough that every example is truncated to exactly seqLength tokens.
  const words = Object.keys((tokenizer.json as { model: { vocab: Record<string, number> } }).model.vocab).filter((w) => /^[a-z]{2,}$/.test(w));
  const records = Array.from({ length: batchSize * steps }, (_, i) => ({
    text: Array.from({ length: seqLength * 2 }, () => words[Math.floor(rng.uniform(0, words.length))]).join(" "),
    label: LABELS[i % 2],
  }));
  await writeFile(path.join(tmp, "train.jsonl"), records.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
}

function benchDir(): string {
  return path.join(os.tmpdir(), `lora-bench-distilbert-L${layers}-b${batchSize}x${seqLength}-s${steps}`);
}

// --- per-kernel profile ------------------------------------------------------------------------

/** Wraps every kernel of the active backend with a timer; `report` gives ms per step by kernel. */
function profileKernels(backendName: string) {
  const totals = new Map<string, { ms: number; calls: number }>();
  for (const config of tf.getKernelsForBackend(backendName)) {
    const inner = config.kernelFunc;
    const entry = { ms: 0, calls: 0 };
    totals.set(config.kernelName, entry);
    tf.unregisterKernel(config.kernelName, backendName);
    tf.registerKernel({
      ...config,
      setupFunc: undefined,
      kernelFunc: (args) => {
        const start = performance.now();
        const out = inner(args);
        entry.ms += performance.now() - start;
        entry.calls++;
        return out;
      },
    });
  }
  return {
    reset: () => totals.forEach((entry) => Object.assign(entry, { ms: 0, calls: 0 })),
    report: (stepCount: number) => {
      const rows = [...totals].filter(([, e]) => e.calls > 0).sort((a, b) => b[1].ms - a[1].ms);
      const all = rows.reduce((sum, [, e]) => sum + e.ms, 0);
      const lines = [`per-kernel time over ${stepCount} steady steps (ms per step; kernels ${(all / stepCount).toFixed(0)} ms/step)`];
      for (const [name, e] of rows.slice(0, 20)) {
        lines.push(`  ${name.padEnd(22)} ${(e.ms / stepCount).toFixed(1).padStart(9)} ms ${String(Math.round(e.calls / stepCount)).padStart(6)} calls ${((100 * e.ms) / all).toFixed(1).padStart(5)}%`);
      }
      return lines.join("\n");
    },
  };
}

// --- child: one backend ------------------------------------------------------------------------

async function runChild(backend: BackendChoice): Promise<ChildResult> {
  const dir = benchDir();
  const info = await initBackend(backend, { blasAddonPath: loadConfig().trainerBlasAddon });
  const profiler = options.verbose ? profileKernels(tf.getBackend()) : undefined;
  const stamps: number[] = [];
  const onStep = () => {
    stamps.push(performance.now());
    if (stamps.length === 1) profiler?.reset();
  };
  let tokensPerStep = batchSize * seqLength;
  if (mode === "lora") {
    const outDir = path.join(os.tmpdir(), `lora-bench-adapter-${process.pid}`);
    await train(
      {
        modelDir: dir,
        trainFile: path.join(dir, "train.jsonl"),
        outDir,
        lora: { r: 16, alpha: 32, dropout: 0, targetModules: ["q_lin", "v_lin"] },
        hyper: { epochs: 1, batchSize, learningRate: 5e-4, warmupRatio: 0, weightDecay: 0.01, maxSeqLength: seqLength, seed: 1, maxSteps: steps, maxGradNorm: 0 },
      },
      { onStep: (report) => ((tokensPerStep = report.tokensSeen / report.step), onStep()) },
    );
    await rm(outDir, { recursive: true, force: true });
  } else {
    await trainEveryWeight(dir, onStep);
  }
  const stepSeconds = stamps.slice(1).map((t, i) => (t - stamps[i]) / 1000);
  return {
    backend: info.name,
    stepSeconds,
    tokensPerStep,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    profile: profiler?.report(stepSeconds.length),
  };
}

/** Full fine-tuning: every encoder weight and the head are variables that override the frozen ones. */
async function trainEveryWeight(dir: string, onStep: () => void): Promise<void> {
  const pretrained = await loadPretrained(dir);
  const { model, tokenizer } = pretrained;
  const params = new Map<string, tf.Variable>();
  for (const [name, weight] of model.weights) params.set(name, tf.variable(weight, true));
  // The engine keeps frozen linear weights transposed ([in, out]); trained ones are [out, in] overrides.
  for (const [module, transposed] of model.linearWeights) {
    params.set(`${module}.weight`, tf.variable(transposed.transpose(), true));
    transposed.dispose();
  }
  for (const [name, { shape, data }] of initialHead(pretrained, LABELS.length, 1)) params.set(name, tf.variable(tf.tensor(data, shape), true));
  const records = (await readFile(path.join(dir, "train.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
  const examples = encodeExamples(records, tokenizer, seqLength, LABELS);
  const optimizer = new AdamW({ ...ADAMW_DEFAULTS, weightDecay: 0.01 });
  const names = new Map([...params].map(([name, variable]) => [variable.name, name]));
  for (let step = 0; step < steps; step++) {
    const batchExamples = examples.slice(step * batchSize, (step + 1) * batchSize);
    const batch = tokenizer.pad(batchExamples);
    const { value, grads } = tf.variableGrads(
      () => crossEntropy(model.logits(batch, { overrides: params }), batchExamples.map((e) => e.label)),
      [...params.values()],
    );
    value.dataSync();
    value.dispose();
    const byName = new Map(Object.entries(grads).map(([variableName, grad]) => [names.get(variableName)!, grad]));
    optimizer.apply(params, byName, 5e-4, step + 1);
    tf.dispose(Object.values(grads));
    onStep();
  }
}

// --- parent: every backend, the peer, the table --------------------------------------------------

function availableBackends(): BackendName[] {
  if (options.backends) return options.backends.split(",") as BackendName[];
  const require = createRequire(import.meta.url);
  const found: BackendName[] = [];
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      require.resolve(pkg);
      found.push("tensorflow");
      break;
    } catch {
      // not installed: the usual case on CPU hosts
    }
  }
  if (loadBlasAddon().ok) found.push("wasm-blas");
  // cpu (pure JS) takes minutes per DistilBERT step: ask for it with --backends.
  found.push("wasm");
  return found;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

interface Row {
  name: string;
  tokensPerSecond: number;
  stepSeconds: number;
  peakRssMiB: number;
}

/**
 * Undefined once PYTHON imports torch, installing Debian's python3-torch with apt when it does not
 * (PyPI's wheels need the network and a compiler toolchain; the Debian package needs neither), else why not.
 */
function ensureTorch(): string | undefined {
  const importsTorch = () => spawnSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" }).status === 0;
  if (importsTorch()) return undefined;
  if (process.getuid?.() !== 0) return `${PYTHON} cannot import torch; install it with: sudo apt-get install -y python3-torch`;
  console.error(`${PYTHON} cannot import torch: installing python3-torch with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const args of [["update"], ["install", "-y", "--no-install-recommends", "python3-torch"]]) {
    const apt = spawnSync("apt-get", args, { stdio: ["ignore", "ignore", "inherit"], env });
    if (apt.status !== 0) return `apt-get ${args.join(" ")} failed (exit ${apt.status ?? apt.error?.message})`;
  }
  return importsTorch() ? undefined : `${PYTHON} still cannot import torch after installing python3-torch`;
}

function runPeer(): Row | string {
  const missing = ensureTorch();
  if (missing) return `PyTorch peer skipped: ${missing}`;
  const args = [peerScript, "--layers", String(layers), "--steps", String(steps), "--batch", String(batchSize), "--seq", String(seqLength)];
  if (options.full) args.push("--full");
  const run = spawnSync(PYTHON, args, { encoding: "utf8" });
  const line = run.stdout?.trim().split("\n").at(-1) ?? "";
  const field = (key: string) => Number(new RegExp(`${key}=([0-9.]+)`).exec(line)?.[1]);
  if (run.status !== 0 || !Number.isFinite(field("tokens_per_s"))) return `PyTorch peer failed: ${(run.stderr || line).trim().split("\n").at(-1)}`;
  return { name: "pytorch", tokensPerSecond: field("tokens_per_s"), stepSeconds: field("step_median_s"), peakRssMiB: field("peak_rss_mib") };
}

async function runParent(): Promise<void> {
  const dir = benchDir();
  if (!existsSync(path.join(dir, "train.jsonl"))) {
    console.error(`writing a random-weight DistilBERT-shaped model (${layers} layers) to ${dir}`);
    await writeBenchModel(dir);
  }
  const command = `bench/train.ts --layers ${layers} --steps ${steps} --batch ${batchSize} --seq ${seqLength} --rounds ${rounds}${options.full ? " --full" : ""}`;
  console.log(`workload: DistilBERT shape, ${layers} layers, batch ${batchSize} × ${seqLength}, ${mode === "lora" ? "LoRA r16 alpha32 on q,v + head" : "full fine-tuning"}, AdamW, ${steps} steps (median of steps 2..${steps})`);
  console.log(`environment: OPENBLAS_CORETYPE=${process.env.OPENBLAS_CORETYPE ?? "(unset)"}, ${os.cpus().length} CPUs`);
  if (options.verbose) console.log(`\n${await matmulTable(0.3)}\n`);
  // Rounds alternate every backend and the peer, so load from other processes hits both sides
  // alike; each side's best round is reported (peak RSS: the highest round, to stay conservative).
  const best = new Map<string, Row>();
  const record = (row: Row) => {
    const previous = best.get(row.name);
    if (!previous || row.tokensPerSecond > previous.tokensPerSecond) best.set(row.name, { ...row, peakRssMiB: Math.max(row.peakRssMiB, previous?.peakRssMiB ?? 0) });
    else previous.peakRssMiB = Math.max(previous.peakRssMiB, row.peakRssMiB);
  };
  for (let round = 1; round <= rounds; round++) {
    for (const backend of availableBackends()) {
      const childArgs = ["--import", "tsx", fileURLToPath(import.meta.url), "--child", backend, ...process.argv.slice(2)];
      const child = spawnSync(process.execPath, childArgs, { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26 });
      const last = child.stdout.trim().split("\n").at(-1) ?? "";
      if (child.status !== 0 || !last.startsWith("{")) {
        console.log(`${backend}: failed (exit ${child.status}) ${last}`);
        continue;
      }
      const result = JSON.parse(last) as ChildResult;
      const stepSeconds = median(result.stepSeconds);
      const row = { name: result.backend, tokensPerSecond: result.tokensPerStep / stepSeconds, stepSeconds, peakRssMiB: result.peakRssMiB };
      if (rounds > 1) console.log(`round ${round}: ${row.name} ${row.tokensPerSecond.toFixed(0)} tokens/s, ${row.peakRssMiB.toFixed(0)} MiB`);
      record(row);
      if (result.profile) console.log(`${result.backend}: ${result.profile}\n`);
    }
    if (options.peer) {
      const outcome = runPeer();
      if (typeof outcome === "string") console.log(outcome);
      else {
        if (rounds > 1) console.log(`round ${round}: pytorch ${outcome.tokensPerSecond.toFixed(0)} tokens/s, ${outcome.peakRssMiB.toFixed(0)} MiB`);
        record(outcome);
      }
    }
  }
  const rows = [...best.values()];
  const peer = best.get("pytorch");
  const header = `${"backend".padEnd(10)} ${"tokens/s".padStart(9)} ${"step s".padStart(7)} ${"peak RSS MiB".padStart(13)}${peer ? `  ${"tok/s ÷ torch".padStart(13)} ${"RSS ÷ torch".padStart(11)}` : ""}`;
  console.log(`\n${mode} mode  (${command}${options.peer ? " --peer" : ""})`);
  console.log(header);
  for (const row of rows) {
    const ratios = peer ? `  ${(row.tokensPerSecond / peer.tokensPerSecond).toFixed(2).padStart(13)} ${(row.peakRssMiB / peer.peakRssMiB).toFixed(2).padStart(11)}` : "";
    console.log(`${row.name.padEnd(10)} ${row.tokensPerSecond.toFixed(0).padStart(9)} ${row.stepSeconds.toFixed(2).padStart(7)} ${row.peakRssMiB.toFixed(0).padStart(13)}${ratios}`);
  }
}

if (options.child) {
  console.log(JSON.stringify(await runChild(options.child as BackendChoice)));
} else {
  await runParent();
}
