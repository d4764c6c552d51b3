// Training a real-size Llama with its frozen linear weights outside the wasm heap, in each storage
// mode (lora.quantization none / int8 / nf4), against the project's PyTorch float32 LoRA script
// (bench/peer_torch_llm.py) on the same folder in the same run. The model is random-weight, in
// TinyLlama-1.1B's shape by default (22 layers, hidden 2048, 32 heads, 4 KV heads, FFN 5632, vocab
// 32000), written once to a temp folder in the checkpoint dtype asked for (BF16 by default, as
// TinyLlama ships); LoRA r 16 / alpha 32 on q,k,v,o_proj, AdamW at 1e-3 with the gradient norm clipped to 1, batch 4 × 256, on text a LoRA
// learns within 20 steps (trainingRecords). Each mode and the peer run in their own process, so peak RSS
// is per run; the first step is warmup. The peer trains on random ids: the same work, for speed and memory.
//
//   npm run bench:llm -- [--peer] [--steps 4] [--modes none,int8,nf4] [--double-quant] [--dtype BF16|F32]
//                        [--layers 22] [--hidden 2048] [--heads 32] [--kv-heads 4] [--ffn 5632] [--vocab 32000]
//                        [--batch 4] [--seq 256] [--load-only] [--profile] [--gradient-checkpointing auto|on|off]
// --load-only loads the model in each mode and reports peak RSS against the checkpoint's size (the
// "loading never needs twice the model" check; use --dtype F32 for a float32 checkpoint). --profile
// prints where each mode's steady steps spend their time (bench/profile.ts; with gradient
// checkpointing, the recomputed forward counts under "backward").
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, open, rename, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../services/trainer/backend.ts";
import { profileKernels } from "./profile.ts";
import { train } from "../services/trainer/train.ts";
import { loadCausalPretrained } from "../services/trainer/tasks/causal-lm/load.ts";
import type { GradientCheckpointing, Quantization } from "../services/trainer/settings.ts";
import { gpt2Tokenizer } from "../test/fixtures/causal-tokenizers.ts";

const { values: options } = parseArgs({
  options: {
    peer: { type: "boolean", default: false },
    steps: { type: "string", default: "4" },
    modes: { type: "string", default: "none,int8,nf4" },
    "double-quant": { type: "boolean", default: false },
    dtype: { type: "string", default: "BF16" },
    layers: { type: "string", default: "22" },
    hidden: { type: "string", default: "2048" },
    heads: { type: "string", default: "32" },
    "kv-heads": { type: "string", default: "4" },
    ffn: { type: "string", default: "5632" },
    vocab: { type: "string", default: "32000" },
    batch: { type: "string", default: "4" },
    seq: { type: "string", default: "256" },
    "load-only": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    "gradient-checkpointing": { type: "string", default: "auto" },
    child: { type: "string" },
  },
});
const shape = {
  layers: Number(options.layers), hidden: Number(options.hidden), heads: Number(options.heads), kvHeads: Number(options["kv-heads"]),
  ffn: Number(options.ffn), vocab: Number(options.vocab), batch: Number(options.batch), seq: Number(options.seq), dtype: options.dtype as "BF16" | "F32",
};
const steps = Number(options.steps);
const PYTHON = "/usr/bin/python3";
const benchDir = path.dirname(fileURLToPath(import.meta.url));

/** The tensors of a LlamaForCausalLM of this shape, in safetensors order, with how to fill them. */
function layout(): { name: string; shape: number[]; fill: "normal" | "one" }[] {
  const { layers, hidden: d, heads, kvHeads, ffn, vocab } = shape;
  const head = d / heads;
  const out: { name: string; shape: number[]; fill: "normal" | "one" }[] = [{ name: "model.embed_tokens.weight", shape: [vocab, d], fill: "normal" }];
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [d], fill: "one" },
      { name: `${p}.self_attn.q_proj.weight`, shape: [heads * head, d], fill: "normal" },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kvHeads * head, d], fill: "normal" },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kvHeads * head, d], fill: "normal" },
      { name: `${p}.self_attn.o_proj.weight`, shape: [d, heads * head], fill: "normal" },
      { name: `${p}.post_attention_layernorm.weight`, shape: [d], fill: "one" },
      { name: `${p}.mlp.gate_proj.weight`, shape: [ffn, d], fill: "normal" },
      { name: `${p}.mlp.up_proj.weight`, shape: [ffn, d], fill: "normal" },
      { name: `${p}.mlp.down_proj.weight`, shape: [d, ffn], fill: "normal" },
    );
  }
  out.push({ name: "model.norm.weight", shape: [d], fill: "one" }, { name: "lm_head.weight", shape: [vocab, d], fill: "normal" });
  return out;
}

/**
 * Streams a random-weight model.safetensors to disk one tensor at a time (a 1.1B model never sits in
 * memory): uniform values of standard deviation 0.02 from a 32-bit xorshift, norms at 1.
 */
async function writeModel(file: string): Promise<void> {
  const tensors = layout();
  const bytes = shape.dtype === "BF16" ? 2 : 4;
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * bytes;
    header[t.name] = { dtype: shape.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const handle = await open(file, "w");
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  await handle.write(prefix);
  await handle.write(json);
  let state = 0x9e3779b9;
  const limit = 0.02 * Math.sqrt(3);
  const chunk = 1 << 20;
  const floats = new Float32Array(chunk);
  const words = new Uint32Array(floats.buffer);
  for (const t of tensors) {
    const count = t.shape.reduce((a, b) => a * b, 1);
    for (let done = 0; done < count; done += chunk) {
      const n = Math.min(chunk, count - done);
      for (let i = 0; i < n; i++) {
        state ^= state << 13;
        state ^= state >>> 17;
        state ^= state << 5;
        floats[i] = t.fill === "one" ? 1 : ((state >>> 0) / 4294967296 - 0.5) * 2 * limit;
      }
      if (shape.dtype === "F32") await handle.write(new Uint8Array(floats.buffer, 0, 4 * n));
      else {
        const halves = new Uint16Array(n);
        for (let i = 0; i < n; i++) halves[i] = words[i] >>> 16;
        await handle.write(new Uint8Array(halves.buffer));
      }
    }
  }
  await handle.close();
}

/** The training and held-out files: learnable in a few steps (see trainingRecords), so learning can be seen. */
const TRAIN_FILE = "train-chain.jsonl";
const VALIDATION_FILE = "validation-chain.jsonl";
const VALIDATION_RECORDS = 8;

/**
 * Records a LoRA can learn from within a few steps: whole words from a 64-word subset, each followed by
 * a fixed successor (a cycle through the subset), so the unigram and the next word are predictable.
 */
function trainingRecords(vocabulary: string[]): string[] {
  const words = vocabulary.slice(0, 64);
  const text = (count: number, at: number) => Array.from({ length: count }, (_, i) => words[(at + 37 * i) % words.length]).join(" ");
  return Array.from({ length: shape.batch * 64 + VALIDATION_RECORDS }, (_, i) => JSON.stringify({ prompt: text(8, i), completion: ` ${text(shape.seq, i + 8)}` }));
}

async function ensureModel(): Promise<string> {
  const { layers, hidden, heads, kvHeads, ffn, vocab, batch, seq, dtype } = shape;
  const dir = path.join(os.tmpdir(), `lora-bench-llm-${layers}x${hidden}-${heads}-${kvHeads}-${ffn}-${vocab}-${dtype}-${batch}x${seq}`);
  const tokenizer = await gpt2Tokenizer(Math.min(20000, vocab - 300));
  const vocabulary = Object.keys((tokenizer.json as { model: { vocab: Record<string, number> } }).model.vocab).filter((t) => /^Ġ[a-z]{3,}$/.test(t)).map((t) => t.slice(1));
  if (!existsSync(path.join(dir, "model.safetensors"))) {
    console.error(`writing a random-weight Llama (${layers} layers, hidden ${hidden}, ${dtype}) to ${dir}`);
    const tmp = `${dir}.tmp-${process.pid}`;
    await mkdir(tmp, { recursive: true });
    const eos = tokenizer.vocabSize - 1;
    await writeFile(path.join(tmp, "config.json"), JSON.stringify({
      architectures: ["LlamaForCausalLM"], model_type: "llama", vocab_size: vocab, hidden_size: hidden, intermediate_size: ffn, num_hidden_layers: layers,
      num_attention_heads: heads, num_key_value_heads: kvHeads, hidden_act: "silu", max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000,
      tie_word_embeddings: false, bos_token_id: eos, eos_token_id: eos, torch_dtype: dtype === "BF16" ? "bfloat16" : "float32",
    }, null, 2));
    await writeFile(path.join(tmp, "tokenizer.json"), JSON.stringify(tokenizer.json));
    await writeModel(path.join(tmp, "model.safetensors"));
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  }
  if (!existsSync(path.join(dir, VALIDATION_FILE))) {
    const records = trainingRecords(vocabulary);
    await writeFile(path.join(dir, TRAIN_FILE), records.slice(VALIDATION_RECORDS).join("\n") + "\n");
    await writeFile(path.join(dir, VALIDATION_FILE), records.slice(0, VALIDATION_RECORDS).join("\n") + "\n");
  }
  return dir;
}

interface Row {
  name: string;
  tokensPerSecond: number;
  peakRssMiB: number;
  losses: number[];
  /** Held-out loss of the base model and of the adapter after the run. */
  validation?: [number, number];
  profile?: string;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

/** Peak RSS of loading the model alone, as a multiple of model.safetensors' size. */
async function loadOnly(dir: string, quantization: Quantization): Promise<Row> {
  await initBackend("wasm-blas");
  const pretrained = await loadCausalPretrained(dir, { quantization, doubleQuant: quantization === "nf4" && options["double-quant"] });
  const peakRssMiB = process.resourceUsage().maxRSS / 1024;
  const fileMiB = (await stat(path.join(dir, "model.safetensors"))).size / 2 ** 20;
  pretrained.model.dispose();
  return { name: quantization, tokensPerSecond: 0, peakRssMiB, losses: [peakRssMiB / fileMiB] };
}

async function runChild(dir: string, quantization: Quantization): Promise<Row> {
  if (options["load-only"]) return loadOnly(dir, quantization);
  await initBackend("wasm-blas");
  const profiler = options.profile ? profileKernels(tf.getBackend()) : undefined;
  const stamps: number[] = [];
  const losses: number[] = [];
  let tokensPerStep = shape.batch * shape.seq;
  const outDir = path.join(os.tmpdir(), `lora-bench-llm-adapter-${process.pid}`);
  const result = await train(
    {
      modelDir: dir,
      trainFile: path.join(dir, TRAIN_FILE),
      validationFile: path.join(dir, VALIDATION_FILE),
      outDir,
      lora: { r: 16, alpha: 32, dropout: 0, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"], quantization, doubleQuant: quantization === "nf4" && options["double-quant"] },
      hyper: {
        epochs: 1, batchSize: shape.batch, learningRate: 1e-3, warmupRatio: 0, weightDecay: 0.01, maxSeqLength: shape.seq, seed: 1, maxSteps: steps, maxGradNorm: 1, trainOnInputs: true,
        gradientCheckpointing: options["gradient-checkpointing"] as GradientCheckpointing, evalGenerations: 0,
      },
    },
    {
      onStep: (report) => {
        stamps.push(performance.now());
        if (stamps.length === 1) profiler?.reset();
        losses.push(report.loss);
        console.error(`${quantization}: step ${report.step}/${steps} loss ${report.loss.toFixed(4)}`);
        tokensPerStep = report.tokensSeen / report.step;
      },
    },
  );
  await rm(outDir, { recursive: true, force: true });
  const seconds = median(stamps.slice(1).map((t, i) => (t - stamps[i]) / 1000));
  const profile = profiler?.report(stamps.length - 1, 1000 * seconds);
  const validation: [number, number] = [result.baseline.loss, result.metrics.loss];
  return { name: quantization, tokensPerSecond: tokensPerStep / seconds, peakRssMiB: process.resourceUsage().maxRSS / 1024, losses, validation, profile };
}

function runEngine(quantization: string): Row | string {
  const child = spawnSync(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "--child", quantization, ...process.argv.slice(2)], {
    encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 1 << 26,
  });
  const last = child.stdout.trim().split("\n").at(-1) ?? "";
  return child.status === 0 && last.startsWith("{") ? (JSON.parse(last) as Row) : `${quantization}: failed (exit ${child.status}) ${last}`;
}

function runPeer(dir: string): Row | string {
  if (spawnSync(PYTHON, ["-c", "import torch"], { stdio: "ignore" }).status !== 0) return `PyTorch peer skipped: ${PYTHON} cannot import torch (apt-get install python3-torch)`;
  const run = spawnSync(PYTHON, [path.join(benchDir, "peer_torch_llm.py"), dir, "--steps", String(steps), "--batch", String(shape.batch), "--seq", String(shape.seq)], { encoding: "utf8" });
  const line = run.stdout?.trim().split("\n").at(-1) ?? "";
  const field = (key: string) => Number(new RegExp(`${key}=([0-9.]+)`).exec(line)?.[1]);
  if (run.status !== 0 || !Number.isFinite(field("tokens_per_s"))) return `PyTorch peer failed: ${(run.stderr || line).trim().split("\n").at(-1)}`;
  const losses = (/losses=([0-9.,]+)/.exec(line)?.[1] ?? "").split(",").filter(Boolean).map(Number);
  return { name: "pytorch f32", tokensPerSecond: field("tokens_per_s"), peakRssMiB: field("peak_rss_mib"), losses };
}

async function runParent(): Promise<void> {
  const dir = await ensureModel();
  if (options["load-only"]) {
    const fileMiB = (await stat(path.join(dir, "model.safetensors"))).size / 2 ** 20;
    console.log(`loading a ${fileMiB.toFixed(0)} MiB ${shape.dtype} checkpoint (${shape.layers} layers, hidden ${shape.hidden})`);
    for (const mode of options.modes.split(",")) {
      const outcome = runEngine(mode);
      console.log(typeof outcome === "string" ? outcome : `${mode.padEnd(5)} peak RSS ${outcome.peakRssMiB.toFixed(0)} MiB = ${outcome.losses[0].toFixed(2)} × the checkpoint`);
    }
    return;
  }
  console.log(`Llama ${shape.layers} layers, hidden ${shape.hidden}, ${shape.heads} heads / ${shape.kvHeads} KV, FFN ${shape.ffn}, vocab ${shape.vocab}, ${shape.dtype} checkpoint;`);
  console.log(`LoRA r 16 / alpha 32 on q,k,v,o_proj, AdamW, batch ${shape.batch} × ${shape.seq}, ${steps} steps (median of steps 2..${steps}); ${os.cpus().length} CPUs`);
  const rows: Row[] = [];
  for (const mode of options.modes.split(",")) {
    const outcome = runEngine(mode);
    if (typeof outcome === "string") console.log(outcome);
    else rows.push(outcome);
    if (typeof outcome === "object" && outcome.profile) console.log(`${mode}: ${outcome.profile}\n`);
  }
  const peer = options.peer ? runPeer(dir) : undefined;
  if (typeof peer === "string") console.log(peer);
  else if (peer) rows.push(peer);
  const reference = typeof peer === "object" ? peer : undefined;
  const ratio = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) : "-");
  console.log(`\n${"storage".padEnd(12)} ${"tokens/s".padStart(9)} ${"peak RSS MiB".padStart(13)} ${"tok/s ÷ torch".padStart(14)} ${"RSS ÷ torch".padStart(12)}  held-out loss base → adapter; step losses`);
  for (const row of rows) {
    console.log(
      `${row.name.padEnd(12)} ${row.tokensPerSecond.toFixed(1).padStart(9)} ${row.peakRssMiB.toFixed(0).padStart(13)} ${ratio(row.tokensPerSecond, reference?.tokensPerSecond).padStart(14)} ` +
        `${ratio(row.peakRssMiB, reference?.peakRssMiB).padStart(12)}  ${row.validation ? `held-out ${row.validation[0].toFixed(3)} → ${row.validation[1].toFixed(3)}; ` : ""}${row.losses.map((l) => l.toFixed(3)).join(" ")}`,
    );
  }
}

if (options.child) console.log(JSON.stringify(await runChild(await ensureModel(), options.child as Quantization)));
else await runParent();
