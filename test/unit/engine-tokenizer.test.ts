import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import { byteLevelBpeTokenizer } from "../fixtures/make-fixtures.ts";
import { TextTokenizer } from "../../services/trainer/tokenizer.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

let wordPiece: TextTokenizer;
let bpe: TextTokenizer;

before(async () => {
  await engineFixtures();
  wordPiece = await TextTokenizer.load(fixtureModel("bert-cls"), { padId: 0, usesTypeIds: true });
  bpe = await TextTokenizer.load(fixtureModel("roberta-cls"), { padId: 1, usesTypeIds: false });
});

const tokensOf = (tokenizer: TextTokenizer, ids: number[]) => ids.map((id) => [...tokenizer["tokenizer"].get_vocab(true)].find(([, v]) => v === id)![0]);

test("WordPiece lowercases, strips accents and splits punctuation as BERT does", () => {
  const { ids, typeIds } = wordPiece.encode("Héllo, WÖRLD!", 32);
  assert.deepEqual(tokensOf(wordPiece, ids), ["[CLS]", "hello", ",", "world", "!", "[SEP]"]);
  assert.deepEqual(typeIds, [0, 0, 0, 0, 0, 0]);
});

test("WordPiece splits unknown words into pieces and maps unmatchable ones to [UNK]", () => {
  const { ids } = wordPiece.encode("unplayable ☃", 32);
  assert.deepEqual(tokensOf(wordPiece, ids), ["[CLS]", "un", "##p", "##l", "##a", "##y", "##able", "[UNK]", "[SEP]"]);
});

test("Chinese characters become single tokens even without spaces", () => {
  const { ids } = wordPiece.encode("我好中文", 32);
  assert.deepEqual(tokensOf(wordPiece, ids), ["[CLS]", "我", "好", "中", "文", "[SEP]"]);
});

test("truncation keeps the special tokens within max length", () => {
  const long = Array.from({ length: 50 }, () => "movie").join(" ");
  const { ids } = wordPiece.encode(long, 10);
  assert.equal(ids.length, 10);
  assert.equal(ids[0], wordPiece.tokenId("[CLS]"));
  assert.equal(ids[9], wordPiece.tokenId("[SEP]"));
  assert.ok(ids.slice(1, 9).every((id) => id === wordPiece.tokenId("movie")));
});

test("pairs get [SEP] between them, type ids 1 on the second, and longest-first truncation", () => {
  const { ids, typeIds } = wordPiece.encode("the movie", 32, "was great");
  assert.deepEqual(tokensOf(wordPiece, ids), ["[CLS]", "the", "movie", "[SEP]", "was", "great", "[SEP]"]);
  assert.deepEqual(typeIds, [0, 0, 0, 0, 1, 1, 1]);
  const truncated = wordPiece.encode("a a a a a a", 9, "i i");
  assert.deepEqual(tokensOf(wordPiece, truncated.ids), ["[CLS]", "a", "a", "a", "a", "[SEP]", "i", "i", "[SEP]"]);
});

test("byte-level BPE with GPT-2's full merges gives gpt-3-encoder's ids, inside RoBERTa's <s> </s>", async () => {
  const { encode } = (await import("gpt-3-encoder")).default as { encode(text: string): number[] };
  const dir = await mkdtemp(path.join(tmpdir(), "bpe-"));
  await writeFile(path.join(dir, "tokenizer.json"), JSON.stringify((await byteLevelBpeTokenizer(50000)).json));
  const full = await TextTokenizer.load(dir, { padId: 1, usesTypeIds: false });
  for (const text of ["Hello world, this is fine!", "naïve café — 中文 😀", "  spaces   and\ttabs\n", "It's 2024; they'll re-run it."]) {
    const { ids, typeIds } = full.encode(text, 512);
    assert.equal(ids[0], 0);
    assert.equal(ids.at(-1), 2);
    // The fixture vocabulary is GPT-2's shifted by RoBERTa's four leading special tokens.
    assert.deepEqual(ids.slice(1, -1).map((id) => id - 4), encode(text));
    assert.ok(typeIds.every((t) => t === 0));
  }
});

test("padding pads to the longest input with the pad id and a zero mask", () => {
  const batch = bpe.pad([bpe.encode("hi", 16), bpe.encode("hello there friend", 16)]);
  assert.equal(batch.batchSize, 2);
  const first = [...batch.inputIds.slice(0, batch.length)];
  const mask = [...batch.attentionMask.slice(0, batch.length)];
  const real = mask.filter(Boolean).length;
  assert.ok(first.slice(real).every((id) => id === 1));
  assert.ok(mask.slice(real).every((m) => m === 0));
  assert.ok([...batch.attentionMask.slice(batch.length)].every((m) => m === 1));
});
