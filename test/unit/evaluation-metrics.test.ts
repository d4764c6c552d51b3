// The evaluation metrics against cases worked by hand: classification (confusion matrix, per-class
// precision/recall/F1, macro-F1, expected calibration error, per-group metrics on a planted biased set)
// and generated text (exact match, ROUGE-L as rouge-score, corpus BLEU as sacreBLEU with 13a tokens).
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { classificationEvaluation, confusionMatrix, expectedCalibrationError, UNGROUPED } from "../../services/trainer/tasks/classification/metrics.ts";
import { corpusBleu, exactMatch, meanRougeL, rougeL, rougeTokens, tokenize13a } from "../../services/trainer/tasks/causal-lm/text-metrics.ts";

const close = (actual: number, expected: number, message?: string) => assert.ok(Math.abs(actual - expected) < 1e-12, `${message ?? ""} ${actual} ≠ ${expected}`);

/** Logits whose softmax puts probability p on class `top` of two; a confident row for more classes. */
const twoClass = (top: number, p: number) => (top === 0 ? [Math.log(p), Math.log(1 - p)] : [Math.log(1 - p), Math.log(p)]);
const sure = (top: number, classes: number) => Array.from({ length: classes }, (_, c) => (c === top ? 20 : 0));

describe("classification metrics", () => {
  it("confusion matrix, per-class precision/recall/F1 and macro-F1 on a 3-class case", () => {
    const predicted = [0, 0, 1, 1, 2, 0];
    const actual = [0, 1, 1, 1, 2, 2];
    // Rows actual, columns predicted: a→a; b→a, b→b ×2; c→c, c→a.
    assert.deepEqual(confusionMatrix(predicted, actual, 3), [
      [1, 0, 0],
      [1, 2, 0],
      [1, 0, 1],
    ]);
    const { metrics, detail } = classificationEvaluation(predicted.map((c) => sure(c, 3)), actual, ["a", "b", "c"]);
    assert.equal(metrics.accuracy, 4 / 6);
    // a: predicted 3 times, right once → precision 1/3; recall 1/1; F1 = 2·(1/3)·1/(4/3) = 1/2.
    // b: precision 2/2, recall 2/3, F1 = 2·(2/3)/(5/3) = 4/5.  c: precision 1/1, recall 1/2, F1 = 2/3.
    assert.deepEqual(detail.perClass.a, { precision: 1 / 3, recall: 1, f1: 0.5, support: 1 });
    close(detail.perClass.b.f1, 4 / 5);
    close(detail.perClass.c.f1, 2 / 3);
    assert.equal(detail.perClass.b.support, 3);
    close(metrics.macro_f1, (1 / 2 + 4 / 5 + 2 / 3) / 3);
    assert.equal(metrics["precision/a"], 1 / 3);
    assert.equal(metrics["recall/b"], 2 / 3);
    close(metrics["f1/c"], 2 / 3);
    assert.equal(detail.groups, undefined, "no group field, no per-group detail");
    // Mean cross-entropy: a right row [20, 0, 0] costs log(1 + 2e⁻²⁰), a wrong one log(e²⁰ + 2).
    assert.ok(Math.abs(metrics.loss - (4 * Math.log(1 + 2 * Math.exp(-20)) + 2 * Math.log(Math.exp(20) + 2)) / 6) < 1e-9, `${metrics.loss}`);
  });

  it("an undefined precision or recall counts as 0, as scikit-learn's zero_division=0", () => {
    const { detail, metrics } = classificationEvaluation([sure(0, 2), sure(0, 2)], [0, 0], ["yes", "no"]);
    assert.deepEqual(detail.perClass.no, { precision: 0, recall: 0, f1: 0, support: 0 });
    assert.equal(metrics.macro_f1, 0.5, "over every label of the model");
  });

  it("loss is the mean cross-entropy of the logits", () => {
    const { metrics } = classificationEvaluation([twoClass(0, 0.8), twoClass(1, 0.6)], [0, 0], ["x", "y"]);
    close(metrics.loss, (-Math.log(0.8) - Math.log(0.4)) / 2);
  });

  it("expected calibration error: 10 equal-width bins (lo, hi] over the top-class probability", () => {
    // Bins: 0.95 → (0.9, 1], right; 0.85 → (0.8, 0.9], wrong; 0.65 → (0.6, 0.7], right; 0.3 → (0.2, 0.3] (its upper edge), right;
    // 0.72 and 0.78 → (0.7, 0.8], one right: accuracy 0.5 against mean confidence 0.75.
    // ECE = (|1 − 0.95| + |0 − 0.85| + |1 − 0.65| + |1 − 0.3|) / 6 + (2/6)·|0.5 − 0.75| = (1.95 + 0.5) / 6.
    const confidence = [0.95, 0.85, 0.65, 0.3, 0.72, 0.78];
    const correct = [true, false, true, true, true, false];
    close(expectedCalibrationError(confidence, correct), 2.45 / 6);
    // Through the logits: four classes, p on the first and the rest shared, the same rights and wrongs.
    const logits = confidence.map((p) => [Math.log(p), ...new Array(3).fill(Math.log((1 - p) / 3))]);
    const actual = correct.map((right) => (right ? 0 : 1));
    const { metrics, detail } = classificationEvaluation(logits, actual, ["a", "b", "c", "d"]);
    assert.ok(Math.abs(metrics.ece - 2.45 / 6) < 1e-9, `${metrics.ece}`);
    assert.equal(detail.ece, metrics.ece);
    assert.equal(expectedCalibrationError([], []), 0);
  });

  it("per-group metrics on a planted biased set flag the group the model fails", () => {
    // "north": 4 examples, all right. "south": 4 examples, the model always says "pos": 2 right, 2 wrong.
    // One example without a group.
    const rows: { group?: string; actual: number; predicted: number }[] = [
      { group: "north", actual: 0, predicted: 0 },
      { group: "north", actual: 0, predicted: 0 },
      { group: "north", actual: 1, predicted: 1 },
      { group: "north", actual: 1, predicted: 1 },
      { group: "south", actual: 0, predicted: 0 },
      { group: "south", actual: 0, predicted: 0 },
      { group: "south", actual: 1, predicted: 0 },
      { group: "south", actual: 1, predicted: 0 },
      { actual: 1, predicted: 1 },
    ];
    const { metrics, detail } = classificationEvaluation(rows.map((r) => sure(r.predicted, 2)), rows.map((r) => r.actual), ["pos", "neg"], rows.map((r) => r.group));
    assert.deepEqual(Object.keys(detail.groups!), [UNGROUPED, "north", "south"]);
    const north = detail.groups!.north;
    const south = detail.groups!.south;
    assert.equal(north.count, 4);
    assert.equal(north.accuracy, 1);
    assert.equal(north.macro_f1, 1);
    assert.equal(south.accuracy, 0.5);
    // south: pos precision 2/4, recall 2/2 → F1 2/3; neg never predicted → 0. Macro over the classes south has: 1/3.
    close(south.perClass.pos.f1, 2 / 3);
    assert.equal(south.perClass.neg.f1, 0);
    close(south.macro_f1, 1 / 3);
    // The ungrouped example has only "neg", predicted right: macro-F1 over that one class is 1.
    assert.deepEqual(Object.keys(detail.groups![UNGROUPED].perClass), ["neg"]);
    assert.equal(detail.groups![UNGROUPED].macro_f1, 1);
    // Gaps: accuracy 1 − 0.5 = 0.5; macro-F1 1 − 1/3 = 2/3, the larger; best group first.
    assert.equal(detail.largestGroupGap!.metric, "macro_f1");
    assert.deepEqual(detail.largestGroupGap!.groups, [UNGROUPED, "south"]);
    close(detail.largestGroupGap!.gap, 2 / 3);
    close(metrics.largest_group_gap, 2 / 3);
    // Overall numbers are unchanged by grouping.
    assert.equal(metrics.accuracy, 7 / 9);
  });
});

describe("generated-text metrics", () => {
  it("exact match compares after trimming surrounding whitespace", () => {
    assert.equal(exactMatch([" Paris\n", "paris", "Rome"], ["Paris", "Paris", "Rome"]), 2 / 3);
    assert.equal(exactMatch([], []), 0);
  });

  it("ROUGE-L: LCS F-measure (β = 1) over lowercased letter-and-digit tokens", () => {
    // Reference "the cat sat on the mat" (6 tokens), output "the cat on the mat" (5): LCS 5.
    // P = 5/5, R = 5/6, F = 2PR/(P+R) = (10/6)/(11/6) = 10/11.
    close(rougeL("the cat on the mat", "the cat sat on the mat"), 10 / 11);
    // "The mat, the cat!" → [the, mat, the, cat]; the longest common subsequence is 2 ("the mat", "the cat" or "the the").
    // P = 2/4, R = 2/6, F = 2·(1/2)(1/3)/(5/6) = 2/5.
    assert.deepEqual(rougeTokens("The mat, the cat!"), ["the", "mat", "the", "cat"]);
    close(rougeL("The mat, the cat!", "the cat sat on the mat"), 2 / 5);
    assert.equal(rougeL("", "anything"), 0);
    assert.equal(rougeL("?!", "..."), 0, "no tokens on either side is 0, as rouge-score");
    close(meanRougeL(["the cat on the mat", "x"], ["the cat sat on the mat", "y"]), 10 / 11 / 2);
  });

  it("13a tokenization splits punctuation as sacreBLEU does, keeping decimals and a digit's dash", () => {
    assert.deepEqual(tokenize13a("Hello, world. It costs $3.50-ish!"), ["Hello", ",", "world", ".", "It", "costs", "$", "3.50", "-", "ish", "!"]);
    assert.deepEqual(tokenize13a("a &amp; b &lt;c&gt;"), ["a", "&", "b", "<", "c", ">"]);
  });

  it("corpus BLEU-4 with sacreBLEU's exp smoothing and brevity penalty, worked by hand", () => {
    // Output "the cat sat on the mat", reference "the cat is on the mat" (both 6 tokens, BP = 1).
    // 1-grams: the×2, cat, on, mat match: 5/6.  2-grams: "the cat", "on the", "the mat": 3/5.
    // 3-grams: "on the mat": 1/4.  4-grams: none of 3 → exp smoothing, first zero order: 1 / (2 · 3).
    // BLEU = 100 · ((5/6)(3/5)(1/4)(1/6))^(1/4) = (500/6 · 60 · 25 · 100/6)^(1/4) = (75e6/36)^(1/4) ≈ 37.99.
    close(corpusBleu(["the cat sat on the mat"], ["the cat is on the mat"]), (75e6 / 36) ** 0.25);
    // Adding ("hello", "hello world"): counts add up over the corpus (6/7, 3/5, 1/4, 1/6 smoothed over 3 4-grams),
    // and the outputs (7 tokens) are shorter than the references (8): BP = exp(1 − 8/7).
    const expected = Math.exp(1 - 8 / 7) * ((600 / 7) * 60 * 25 * (100 / 6)) ** 0.25;
    close(corpusBleu(["the cat sat on the mat", "hello"], ["the cat is on the mat", "hello world"]), expected);
    assert.equal(corpusBleu(["the same words"], ["the same words"]), 0, "an output shorter than 4 tokens has no 4-gram: 0, as sacreBLEU");
    close(corpusBleu(["one two three four"], ["one two three four"]), 100);
    assert.equal(corpusBleu(["nothing"], ["else"]), 0);
  });
});
