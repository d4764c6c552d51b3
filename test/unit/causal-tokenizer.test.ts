// Decoder tokenizers from tokenizer.json: GPT-2's real BPE files against gpt-3-encoder (an independent
// implementation of OpenAI's GPT-2 encoder), Llama 2 style SentencePiece BPE with byte fallback, Llama 3
// style byte-level BPE; chat templates (Qwen2's ChatML among them); the causal data encodings built on them.
import assert from "node:assert/strict";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { chatRecords, completionRecords } from "../fixtures/make-causal-fixtures.ts";
import { gpt2Tokenizer } from "../fixtures/causal-tokenizers.ts";
import { encodeCausalRecords } from "../../services/trainer/tasks/causal-lm/task.ts";
import { ChatFormatter, ChatTemplateError, FALLBACK_CHAT_TEMPLATE } from "../../services/trainer/tasks/causal-lm/chat-template.ts";
import { CausalDataError, encodeChat, encodeCompletion, IGNORE, packExamples, readCausalFile } from "../../services/trainer/tasks/causal-lm/data.ts";
import { initBackend } from "../../services/trainer/index.ts";
import { chatFormatterOf, loadCausalPretrained, type CausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import { TextTokenizer } from "../../services/trainer/tokenizer.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";

const require = createRequire(import.meta.url);
const openai = require("gpt-3-encoder") as { encode(text: string): number[]; decode(ids: number[]): string };

const CORPUS = [
  "Hello, world! It's a test — isn't it? We'll see; they'd've known. I'm sure you're right.",
  "naïve café déjà vu, Straße, Ελληνικά, русский текст, 中文字符, 日本語のテキスト, 한국어",
  "emoji: 😀🙂👍🏽 👨‍👩‍👧‍👦 🇩🇪 ✨",
  "spaces:   three,    four,\ttab,\t\ttwo tabs, trailing   ",
  "lines\n\nblank line\r\nwindows\n   indented\n",
  "function add(a, b) {\n  return a + b; // sum\n}\nconst x = [1, 2, 3].map((n) => n ** 2);",
  "def f(x):\n    if x >= 10_000:\n        return f\"{x:,}\"\n    return None\n",
  "numbers 0 7 42 123 4567 89012 3.14159 -2.5e-3 1,000,000 2026-11-28 12:34:56",
  "  leading spaces and CAPITALS ALLCAPS MixedCase camelCase snake_case kebab-case",
  "punctuation!!! ??? ... --- ''' \"\"\" ((())) [[]] {{}} <<>> @#$%^&*",
  "urls https://example.com/path?q=1&r=two#frag and e-mails someone@example.org",
  "",
  " ",
  "a",
  "\u00a0non-breaking\u00a0space and zero\u200bwidth",
];

let fixtures: string;
let gpt2Dir: string;
const loaded = new Map<string, CausalPretrained>();

async function model(name: string): Promise<CausalPretrained> {
  if (!loaded.has(name)) loaded.set(name, await loadCausalPretrained(path.join(fixtures, name)));
  return loaded.get(name)!;
}

before(async () => {
  await initBackend("wasm");
  fixtures = await causalFixtures();
  gpt2Dir = await mkdtemp(path.join(tmpdir(), "gpt2-tokenizer-"));
  await mkdir(gpt2Dir, { recursive: true });
  await writeFile(path.join(gpt2Dir, "tokenizer.json"), JSON.stringify((await gpt2Tokenizer()).json));
});

test("GPT-2's real BPE files as tokenizer.json encode and decode exactly as gpt-3-encoder", async () => {
  const tokenizer = await TextTokenizer.load(gpt2Dir, { padId: 50256, usesTypeIds: false });
  assert.equal(tokenizer.tokenId("<|endoftext|>"), 50256);
  let tokens = 0;
  for (const text of CORPUS) {
    const ids = tokenizer.idsOf(text);
    assert.deepEqual(ids, openai.encode(text), JSON.stringify(text));
    assert.equal(tokenizer.decode(ids), text, `round trip of ${JSON.stringify(text)}`);
    assert.equal(openai.decode(ids), text);
    tokens += ids.length;
  }
  assert.ok(tokens > 300);
  // The end-of-text marker written in text is the special token, not its characters.
  assert.deepEqual(tokenizer.idsOf("hi<|endoftext|>"), [...openai.encode("hi"), 50256]);
  assert.deepEqual(tokenizer.prefixIds(), []);
});

test("Llama 2 style SentencePiece BPE: ▁ for spaces, <s> prepended, byte fallback, exact round trips", async () => {
  const { tokenizer } = await model("llama-tiny");
  assert.deepEqual(tokenizer.prefixIds(), [tokenizer.tokenId("<s>")]);
  assert.deepEqual(tokenizer.tokens("colour red"), ["\u2581colour", "\u2581red"]);
  const emoji = tokenizer.tokens("😀");
  assert.deepEqual(emoji.slice(-4), ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]);
  for (const text of CORPUS.filter((t) => t.trim() !== "")) {
    assert.equal(tokenizer.decode(tokenizer.idsOf(text)), text, JSON.stringify(text));
  }
});

test("Llama 3 style byte-level BPE: <|begin_of_text|> prepended, special tokens whole, exact round trips", async () => {
  const { tokenizer, eosIds } = await model("llama3-tiny");
  assert.deepEqual(tokenizer.prefixIds(), [tokenizer.tokenId("<|begin_of_text|>")]);
  assert.deepEqual(eosIds, [tokenizer.tokenId("<|eot_id|>")]);
  assert.deepEqual(tokenizer.idsOf("a<|eot_id|>"), [...tokenizer.idsOf("a"), tokenizer.tokenId("<|eot_id|>")]);
  // Llama 3 splits digit runs into groups of at most three before BPE.
  assert.ok(tokenizer.tokens("1234567").every((token) => token.length <= 3));
  for (const text of CORPUS) assert.equal(tokenizer.decode(tokenizer.idsOf(text)), text, JSON.stringify(text));
});

test("chat templates: the model's own (Llama 2, Llama 3 style) and the documented fallback (GPT-2)", async () => {
  const messages = chatRecords()[0].messages;
  const llama2 = chatFormatterOf(await model("llama-tiny"));
  assert.equal(llama2.usesFallback, false);
  assert.equal(llama2.render(messages, false), "<s>[INST] <<SYS>>\nanswer in one word\n<</SYS>>\n\ncolour red [/INST] apple </s>");
  const llama3 = chatFormatterOf(await model("llama3-tiny"));
  assert.match(llama3.render(messages, true), /^<\|begin_of_text\|><\|start_header_id\|>system<\|end_header_id\|>\n\nanswer in one word<\|eot_id\|>.*<\|start_header_id\|>assistant<\|end_header_id\|>\n\n$/s);
  const gpt2 = chatFormatterOf(await model("gpt2-tiny"));
  assert.equal(gpt2.usesFallback, true);
  assert.equal(gpt2.render(messages, false), "<|system|>\nanswer in one word\n<|user|>\ncolour red\n<|assistant|>\napple<|endoftext|>");
  assert.deepEqual(gpt2.segments(messages), [
    { text: "<|system|>\nanswer in one word\n<|user|>\ncolour red\n<|assistant|>\n", assistant: false },
    { text: "apple<|endoftext|>", assistant: true },
  ]);
  const named = new ChatFormatter({ chat_template: [{ name: "tool_use", template: "x" }, { name: "default", template: FALLBACK_CHAT_TEMPLATE }] }, { bos_token: "", eos_token: "</s>" });
  assert.equal(named.usesFallback, false);
  assert.equal(named.render([{ role: "user", content: "hi" }], true), "<|user|>\nhi\n<|assistant|>\n");
  const unstable = new ChatFormatter({ chat_template: "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}" }, { bos_token: "", eos_token: "" });
  assert.throws(() => unstable.segments(messages), ChatTemplateError);
});

test("Qwen2 (ChatML) chat template from the folder: default system turn, <|im_end|> ends the trained replies, no BOS", async () => {
  const pretrained = await model("qwen2-tiny");
  const formatter = chatFormatterOf(pretrained);
  assert.equal(formatter.usesFallback, false);
  const conversation = [
    { role: "user" as const, content: "colour red" },
    { role: "assistant" as const, content: "apple" },
    { role: "user" as const, content: "colour lime" },
    { role: "assistant" as const, content: "green" },
  ];
  assert.equal(
    formatter.render(conversation.slice(0, 1), true),
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\ncolour red<|im_end|>\n<|im_start|>assistant\n",
  );
  assert.deepEqual(pretrained.tokenizer.prefixIds(), []);
  assert.equal(pretrained.tokenizer.tokenId("<|im_end|>"), pretrained.eosIds[0]);
  const example = encodeChat({ messages: conversation }, pretrained.tokenizer, formatter, { maxLength: 256, trainOnInputs: false, eosId: pretrained.eosIds[0] });
  assert.equal(pretrained.tokenizer.decode(example.ids, false), formatter.render(conversation, false));
  const trained = example.ids.filter((_, t) => example.labels[t] !== IGNORE);
  assert.equal(pretrained.tokenizer.decode(trained, false), "apple<|im_end|>\ngreen<|im_end|>\n");
});

test("completion encoding: one joint tokenization, BOS, prompt masked unless trainOnInputs, EOS appended, truncation", async () => {
  const pretrained = await model("llama-tiny");
  const { tokenizer } = pretrained;
  const record = completionRecords()[0];
  const settings = { maxLength: 64, trainOnInputs: false, eosId: pretrained.eosIds[0] };
  const example = encodeCompletion(record, tokenizer, settings);
  assert.deepEqual(example.ids, [...tokenizer.prefixIds(), ...tokenizer.idsOf(record.prompt + record.completion), pretrained.eosIds[0]]);
  const promptLength = tokenizer.prefixIds().length + tokenizer.idsOf(record.prompt).length;
  assert.deepEqual(example.labels.slice(0, promptLength), new Array(promptLength).fill(IGNORE));
  assert.deepEqual(example.labels.slice(promptLength), example.ids.slice(promptLength));
  // SentencePiece: the completion's leading space is the word's "▁", not an extra token.
  assert.equal(example.ids.length - promptLength, tokenizer.idsOf(record.completion.trim()).length + 1);
  assert.deepEqual(encodeCompletion(record, tokenizer, { ...settings, trainOnInputs: true }).labels.slice(1), example.ids.slice(1));
  const cut = encodeCompletion(record, tokenizer, { ...settings, maxLength: 3 });
  assert.deepEqual(cut.ids, example.ids.slice(0, 3));
});

test("chat encoding: loss only on assistant turns (reply and end marker), multi-turn included", async () => {
  const pretrained = await model("llama3-tiny");
  const formatter = chatFormatterOf(pretrained);
  const settings = { maxLength: 256, trainOnInputs: false, eosId: pretrained.eosIds[0] };
  const conversation = [
    { role: "user" as const, content: "colour red" },
    { role: "assistant" as const, content: "apple" },
    { role: "user" as const, content: "colour lime" },
    { role: "assistant" as const, content: "green" },
  ];
  const example = encodeChat({ messages: conversation }, pretrained.tokenizer, formatter, settings);
  assert.equal(pretrained.tokenizer.decode(example.ids, false), formatter.render(conversation, false));
  const trained = example.ids.filter((_, t) => example.labels[t] !== IGNORE);
  assert.equal(pretrained.tokenizer.decode(trained, false), "apple<|eot_id|>green<|eot_id|>");
});

test("packing fills blocks of maxLength and keeps every token; records are read by format", async () => {
  const pretrained = await model("gpt2-tiny");
  const settings = { maxLength: 16, trainOnInputs: false, eosId: pretrained.eosIds[0] };
  const examples = encodeCausalRecords(chatRecords(), "chat", pretrained, { ...settings, maxLength: 1000 });
  const packed = packExamples(examples, settings.maxLength);
  assert.ok(packed.every((block) => block.ids.length <= 16));
  assert.equal(packed.reduce((n, b) => n + b.ids.length, 0), examples.reduce((n, e) => n + e.ids.length, 0));
  assert.equal((await readCausalFile(path.join(fixtures, "chat-train.jsonl"))).format, "chat");
  await assert.rejects(readCausalFile(path.join(fixtures, "..", "sentiment-train.jsonl")), CausalDataError);
});
