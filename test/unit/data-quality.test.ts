// The dataset quality report on planted files: every kind of finding with its exact line numbers,
// nothing at all on a clean file, and token counts that match how the engine encodes examples.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DatasetQualityAnalyzer, LeakageCheck, comparableText, type QualityReport, type TokenCounting } from "../../services/trainer/data/quality.ts";
import { normalizeText } from "../../services/trainer/data/minhash.ts";
import { checkRecord, detectFormat, type DatasetFormat } from "../../services/trainer/data/records.ts";
import { loadTokenCounter } from "../../services/trainer/token-count.ts";
import { TextTokenizer } from "../../services/trainer/tokenizer.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

const THRESHOLDS = { maxLeakagePercent: 1, maxLabelConflicts: 0 };

/** Feeds a JSONL text to `each` as the API does: 1-based line numbers, blank lines skipped. */
function records(jsonl: string, each: (line: number, record: ReturnType<typeof parse>) => void): DatasetFormat {
  let format: DatasetFormat | undefined;
  jsonl.split("\n").forEach((text, index) => {
    if (text.trim() === "") return;
    const value: unknown = JSON.parse(text);
    format ??= detectFormat(value);
    each(index + 1, parse(value, format!));
  });
  return format!;
}

function parse(value: unknown, format: DatasetFormat) {
  const check = checkRecord(value, format);
  assert.ok(check.ok, JSON.stringify(value));
  return check.record;
}

function analyze(jsonl: string, tokens?: TokenCounting): { analyzer: DatasetQualityAnalyzer; report: QualityReport } {
  const first = JSON.parse(jsonl.split("\n").find((line) => line.trim())!) as unknown;
  const analyzer = new DatasetQualityAnalyzer(detectFormat(first)!, tokens);
  records(jsonl, (line, record) => analyzer.add(line, record));
  return { analyzer, report: analyzer.report(THRESHOLDS) };
}

const finding = (report: QualityReport, code: string) => report.findings.find((entry) => entry.code === code);
const jsonl = (rows: unknown[]) => rows.map((row) => (row === "" ? "" : JSON.stringify(row))).join("\n") + "\n";

/** Distinct sentences, none a near duplicate of another. */
const CLEAN_TEXTS = [
  "The soundtrack carried every quiet scene beautifully",
  "A tedious script that nobody could rescue",
  "Bright performances from a young and fearless cast",
  "I checked my watch four times before the halfway mark",
  "Gorgeous photography of mountains at dawn",
  "The villain's motives never made any sense to me",
  "Warm, funny and surprisingly wise about families",
  "Dialogue so wooden you could build a cabin with it",
  "An inventive heist plot with a satisfying twist",
  "Two hours I will never get back",
  "The lead actress deserves every award this season",
  "Muddy sound mixing buried half the jokes",
];

const cleanClassification = () => CLEAN_TEXTS.map((text, index) => ({ text, label: index % 2 ? "negative" : "positive" }));

describe("dataset quality report", () => {
  it("finds nothing on a clean file", () => {
    const { report } = analyze(jsonl(cleanClassification()), { model: "words", maxLength: 64, count: (record) => ("text" in record ? record.text.split(" ").length : 0) });
    assert.deepEqual(report.findings, []);
    assert.equal(report.version, 1);
    assert.equal(report.examples, CLEAN_TEXTS.length);
    assert.deepEqual(report.stats.labelCounts, { negative: 6, positive: 6 });
    assert.equal(report.stats.tokens?.truncated, 0);
  });

  it("finds planted duplicates, near duplicates, label conflicts and empty texts at their lines", () => {
    const rows: unknown[] = cleanClassification(); // lines 1..12
    rows.push({ text: "the soundtrack carried EVERY quiet scene, beautifully!", label: "positive" }); // 13: duplicate of 1 after normalization
    rows.push({ text: "A tedious script that nobody could rescue", label: "positive" }); // 14: conflicts with 2 (negative)
    rows.push(""); // 15: blank line, not an example
    rows.push({ text: "Gorgeous photography of mountains at dawn, yes", label: "positive" }); // 16: near duplicate of 5
    rows.push({ text: "?!...", label: "negative" }); // 17: nothing to learn from
    rows.push({ text: "Two hours I will never get back", label: "negative" }); // 18: duplicate of 10
    rows.push({ text: "Warm, funny and surprisingly wise about families.", label: "negative" }); // 19: conflicts with 7 (positive)
    const { report } = analyze(jsonl(rows));
    const codes = report.findings.map((entry) => entry.code).sort();
    assert.deepEqual(codes, ["empty_text", "exact_duplicate", "label_conflict", "near_duplicate"]);

    const duplicates = finding(report, "exact_duplicate")!;
    assert.equal(duplicates.count, 2);
    assert.deepEqual(duplicates.lines, [13, 18]);
    assert.deepEqual(duplicates.examples, [{ line: 13, duplicateOf: 1 }, { line: 18, duplicateOf: 10 }]);
    assert.equal(duplicates.severity, "warning");

    const near = finding(report, "near_duplicate")!;
    assert.equal(near.count, 1);
    assert.deepEqual(near.lines, [16]);
    assert.equal((near.examples![0] as { similarTo: number }).similarTo, 5);

    const conflicts = finding(report, "label_conflict")!;
    assert.equal(conflicts.count, 4, "both sides of each conflict");
    assert.deepEqual(conflicts.lines, [2, 7, 14, 19]);
    assert.equal(conflicts.severity, "blocking", "any conflict blocks by default");

    const empty = finding(report, "empty_text")!;
    assert.deepEqual([empty.count, empty.lines], [1, [17]]);
  });

  it("marks label conflicts blocking only past the configured number", () => {
    const rows = [...cleanClassification(), { text: CLEAN_TEXTS[0], label: "negative" }];
    const analyzer = new DatasetQualityAnalyzer("classification");
    records(jsonl(rows), (line, record) => analyzer.add(line, record));
    assert.equal(finding(analyzer.report({ maxLeakagePercent: 1, maxLabelConflicts: 2 }), "label_conflict")!.severity, "warning");
    assert.equal(finding(analyzer.report({ maxLeakagePercent: 1, maxLabelConflicts: 1 }), "label_conflict")!.severity, "blocking");
  });

  it("names the starved class and its lines", () => {
    const rows = [
      ...Array.from({ length: 22 }, (_, index) => ({ text: `common example ${index} ${CLEAN_TEXTS[index % CLEAN_TEXTS.length]}`, label: "common" })),
      { text: "the only rare one", label: "rare" },
    ];
    const { report } = analyze(jsonl(rows));
    const imbalance = finding(report, "label_imbalance")!;
    assert.deepEqual([imbalance.count, imbalance.lines, imbalance.severity], [1, [23], "warning"]);
    assert.match(imbalance.message, /"rare" \(1\)/);
  });

  it("finds examples longer than the model's maximum in tokens, with token statistics", () => {
    const rows = cleanClassification();
    rows[3] = { text: `${rows[3].text} ${"and then some more ".repeat(8)}`, label: rows[3].label }; // line 4
    rows[9] = { text: `${"long ".repeat(40)}`, label: rows[9].label }; // line 10
    const words: TokenCounting = { model: "words", maxLength: 16, count: (record) => ("text" in record ? record.text.trim().split(/\s+/).length + 2 : 0) };
    const { report } = analyze(jsonl(rows), words);
    const tooLong = finding(report, "too_long")!;
    assert.deepEqual([tooLong.count, tooLong.lines], [2, [4, 10]]);
    assert.deepEqual(tooLong.examples, [{ line: 4, tokens: 44 }, { line: 10, tokens: 42 }]);
    assert.match(tooLong.message, /16 tokens with words/);
    assert.equal(report.stats.tokens?.max, 44);
    assert.equal(report.stats.tokens?.truncated, 2);
  });

  it("counts validation examples that are training examples, at the validation file's lines", () => {
    const { analyzer } = analyze(jsonl(cleanClassification()));
    const validation = [
      { text: "Something new about a different film", label: "positive" }, // 1
      { text: "muddy sound mixing buried half the jokes", label: "negative" }, // 2: train line 12
      { text: "Yet another unseen review", label: "negative" }, // 3
      { text: "Bright performances from a young and fearless cast", label: "positive" }, // 4: train line 3
    ];
    const leakage = new LeakageCheck(analyzer);
    records(jsonl(validation), (line, record) => leakage.add(line, record));
    const found = leakage.finding(THRESHOLDS)!;
    assert.deepEqual([found.code, found.count, found.lines, found.severity], ["train_validation_leakage", 2, [2, 4], "blocking"]);
    assert.deepEqual(found.examples, [{ validationLine: 2, trainLine: 12 }, { validationLine: 4, trainLine: 3 }]);
    assert.equal(leakage.finding({ maxLeakagePercent: 60, maxLabelConflicts: 0 })!.severity, "warning", "50 % is under a 60 % threshold");

    const clean = new LeakageCheck(analyzer);
    records(jsonl(validation.filter((_, index) => index % 2 === 0)), (line, record) => clean.add(line, record));
    assert.equal(clean.finding(THRESHOLDS), undefined);
  });

  it("compares completion and chat examples by their documented text", () => {
    assert.equal(normalizeText("  Héllo,   WORLD!! "), "héllo world");
    assert.notEqual(comparableText({ prompt: "a b", completion: "c" }), comparableText({ prompt: "a", completion: "b c" }));
    const system = (content: string) => ({ role: "system" as const, content });
    const chat = (user: string) => ({ messages: [system("You are terse."), { role: "user" as const, content: user }, { role: "assistant" as const, content: "Fine." }] });
    assert.equal(comparableText(chat("Hi there")), comparableText({ messages: [system("Another prompt"), ...chat("hi there!").messages.slice(1)] }));

    const file = jsonl([
      { prompt: "Translate to French: cat", completion: " chat" },
      { prompt: "Translate to French: dog", completion: " chien" },
      { prompt: "Translate to French: cat", completion: " chat" },
      { prompt: "Translate to French: bird", completion: " ..." },
    ]);
    const { report } = analyze(file);
    assert.deepEqual(finding(report, "exact_duplicate")!.lines, [3]);
    assert.deepEqual(finding(report, "empty_text")!.lines, [4]);
    assert.equal(finding(report, "label_conflict"), undefined);
    assert.equal(report.stats.labelCounts, undefined);
  });

  it("counts tokens exactly as training encodes them", async () => {
    await engineFixtures();
    const encoder = await loadTokenCounter(fixtureModel("distilbert-cls"));
    const tokenizer = await TextTokenizer.load(fixtureModel("distilbert-cls"), { padId: 0, usesTypeIds: false });
    const text = "what a great film, truly";
    assert.equal(encoder.count({ text, label: "x" }), tokenizer.encode(text, 10_000).ids.length);
    assert.ok(encoder.count({ text: text.repeat(50), label: "x" }) > encoder.maxPositions, "not truncated");

    const causal = await causalFixtures();
    const decoder = await loadTokenCounter(`${causal}/gpt2-tiny`);
    const short = decoder.count({ prompt: "Say hi:", completion: " hi" });
    assert.ok(short > 2 && short < 20, `${short}`);
    assert.ok(decoder.count({ messages: [{ role: "user", content: "hi" }, { role: "assistant", content: "hello" }] }) > short - 5);
  });
});
