// The model folders the training and prediction benches run on, in Hugging Face layout with random
// weights (std 0.02, as HF initialises; the law does not change speed), and their training data:
//   - distilbert: DistilBertModel (6 layers, d 768, 12 heads, FFN 3072, vocab 30522), WordPiece;
//   - gpt2: GPT2LMHeadModel small (12 layers, d 768, 12 heads, vocab 50257), GPT-2's real BPE.
// Every text is long enough to be truncated to exactly the bench's sequence length.
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { gpt2Tokenizer } from "../test/fixtures/causal-tokenizers.ts";
import { wordPieceTokenizer } from "../test/fixtures/make-fixtures.ts";
import { Rng } from "../services/trainer/rng.ts";
import { serializeSafetensors, type NamedArray } from "../services/trainer/safetensors.ts";

export type WorkloadName = "distilbert" | "gpt2";
export const LABELS = ["negative", "positive"];

export interface WorkloadShape {
  name: WorkloadName;
  layers: number;
  batch: number;
  seq: number;
  /** Training examples written: one batch per step. */
  examples: number;
}

/** The shape the issue fixes for each workload unless the command line overrides it. */
export const DEFAULT_SHAPES: Record<WorkloadName, Omit<WorkloadShape, "examples">> = {
  distilbert: { name: "distilbert", layers: 6, batch: 8, seq: 128 },
  gpt2: { name: "gpt2", layers: 12, batch: 4, seq: 256 },
};

export function workloadDir(shape: WorkloadShape): string {
  return path.join(os.tmpdir(), `lora-bench-${shape.name}-L${shape.layers}-b${shape.batch}x${shape.seq}-n${shape.examples}`);
}

class RandomWeights {
  readonly tensors = new Map<string, NamedArray>();
  constructor(private readonly rng: Rng) {}

  matrix(name: string, shape: number[]): void {
    const bound = 0.02 * Math.sqrt(3); // uniform with the standard deviation of normal(0, 0.02)
    this.tensors.set(name, { shape, data: this.rng.fill(shape[0] * (shape[1] ?? 1), (r) => r.uniform(-bound, bound)) });
  }

  constant(name: string, size: number, value: number): void {
    this.tensors.set(name, { shape: [size], data: new Float32Array(size).fill(value) });
  }

  norm(name: string, d: number): void {
    this.constant(`${name}.weight`, d, 1);
    this.constant(`${name}.bias`, d, 0);
  }
}

function distilbert(shape: WorkloadShape, rng: Rng) {
  const [d, ffn, vocab] = [768, 3072, 30522];
  const w = new RandomWeights(rng);
  const linear = (name: string, out: number, inFeatures: number) => {
    w.matrix(`${name}.weight`, [out, inFeatures]);
    w.constant(`${name}.bias`, out, 0);
  };
  w.matrix("embeddings.word_embeddings.weight", [vocab, d]);
  w.matrix("embeddings.position_embeddings.weight", [512, d]);
  w.norm("embeddings.LayerNorm", d);
  for (let layer = 0; layer < shape.layers; layer++) {
    const p = `transformer.layer.${layer}`;
    for (const m of ["q_lin", "k_lin", "v_lin", "out_lin"]) linear(`${p}.attention.${m}`, d, d);
    w.norm(`${p}.sa_layer_norm`, d);
    linear(`${p}.ffn.lin1`, ffn, d);
    linear(`${p}.ffn.lin2`, d, ffn);
    w.norm(`${p}.output_layer_norm`, d);
  }
  const tokenizer = wordPieceTokenizer();
  // No dropout anywhere: the PyTorch peers have none either.
  const config = {
    architectures: ["DistilBertModel"], model_type: "distilbert", vocab_size: vocab, dim: d, n_layers: shape.layers, n_heads: 12,
    hidden_dim: ffn, max_position_embeddings: 512, activation: "gelu", dropout: 0, attention_dropout: 0,
    seq_classif_dropout: 0, pad_token_id: 0, initializer_range: 0.02, sinusoidal_pos_embds: false,
  };
  const words = Object.keys((tokenizer.json as { model: { vocab: Record<string, number> } }).model.vocab).filter((word) => /^[a-z]{2,}$/.test(word));
  const records = Array.from({ length: shape.examples }, (_, i) => ({
    text: Array.from({ length: shape.seq * 2 }, () => words[Math.floor(rng.uniform(0, words.length))]).join(" "),
    label: LABELS[i % 2],
  }));
  return { tensors: w.tensors, tokenizer: tokenizer.json, config, records };
}

async function gpt2(shape: WorkloadShape, rng: Rng) {
  const [d, vocab, positions] = [768, 50257, 1024];
  const w = new RandomWeights(rng);
  // Conv1D weights are stored [in, out].
  const conv = (name: string, inFeatures: number, out: number) => {
    w.matrix(`${name}.weight`, [inFeatures, out]);
    w.constant(`${name}.bias`, out, 0);
  };
  w.matrix("transformer.wte.weight", [vocab, d]);
  w.matrix("transformer.wpe.weight", [positions, d]);
  for (let layer = 0; layer < shape.layers; layer++) {
    const p = `transformer.h.${layer}`;
    w.norm(`${p}.ln_1`, d);
    conv(`${p}.attn.c_attn`, d, 3 * d);
    conv(`${p}.attn.c_proj`, d, d);
    w.norm(`${p}.ln_2`, d);
    conv(`${p}.mlp.c_fc`, d, 4 * d);
    conv(`${p}.mlp.c_proj`, 4 * d, d);
  }
  w.norm("transformer.ln_f", d);
  const tokenizer = await gpt2Tokenizer();
  const config = {
    architectures: ["GPT2LMHeadModel"], model_type: "gpt2", vocab_size: vocab, n_positions: positions, n_embd: d, n_layer: shape.layers,
    n_head: 12, n_inner: null, activation_function: "gelu_new", resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0, layer_norm_epsilon: 1e-5,
    initializer_range: 0.02, scale_attn_weights: true, use_cache: true, bos_token_id: 50256, eos_token_id: 50256, tie_word_embeddings: true,
  };
  // Whole words ("Ġword" tokens), one token each: a prompt and a completion of seq tokens each.
  const vocabulary = (tokenizer.json as { model: { vocab: Record<string, number> } }).model.vocab;
  const words = Object.keys(vocabulary).filter((token) => /^Ġ[a-z]{3,}$/.test(token)).map((token) => token.slice(1));
  const text = (count: number) => Array.from({ length: count }, () => words[Math.floor(rng.uniform(0, words.length))]).join(" ");
  const records = Array.from({ length: shape.examples }, () => ({ prompt: text(8), completion: ` ${text(shape.seq)}` }));
  return { tensors: w.tensors, tokenizer: tokenizer.json, config, records };
}

/** Writes the workload's folder (model, tokenizer, train.jsonl) unless it is already there; returns it. */
export async function ensureWorkload(shape: WorkloadShape): Promise<string> {
  const dir = workloadDir(shape);
  if (existsSync(path.join(dir, "train.jsonl"))) return dir;
  console.error(`writing a random-weight ${shape.name}-shaped model (${shape.layers} layers) to ${dir}`);
  const rng = Rng.derive(7, shape.layers);
  const { tensors, tokenizer, config, records } = shape.name === "gpt2" ? await gpt2(shape, rng) : distilbert(shape, rng);
  const tmp = `${dir}.tmp-${process.pid}`;
  await mkdir(tmp, { recursive: true });
  await writeFile(path.join(tmp, "config.json"), JSON.stringify(config, null, 2));
  await writeFile(path.join(tmp, "tokenizer.json"), JSON.stringify(tokenizer));
  await writeFile(path.join(tmp, "model.safetensors"), serializeSafetensors(tensors));
  await writeFile(path.join(tmp, "train.jsonl"), records.map((r) => JSON.stringify(r)).join("\n") + "\n");
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  return dir;
}
