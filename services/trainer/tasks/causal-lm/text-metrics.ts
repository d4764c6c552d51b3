// Metrics of generated text against reference text, with the definitions the tools people compare with
// use, so a number here means what it means there: exact match after trimming, ROUGE-L as Google's
// rouge-score computes it, and corpus BLEU as sacreBLEU computes it by default.

/** 1 when the output equals the reference once surrounding whitespace is trimmed, else 0; averaged over pairs. */
export function exactMatch(outputs: string[], references: string[]): number {
  if (!outputs.length) return 0;
  return outputs.filter((output, i) => output.trim() === references[i].trim()).length / outputs.length;
}

/** rouge-score's default tokenizer: lowercase, anything but letters and digits is a separator (Unicode-aware here). */
export function rougeTokens(text: string): string[] {
  return text.toLowerCase().split(/[^\p{L}\p{N}]+/u).filter(Boolean);
}

function lcsLength(a: string[], b: string[]): number {
  let previous = new Array<number>(b.length + 1).fill(0);
  for (const token of a) {
    const current = new Array<number>(b.length + 1).fill(0);
    for (let j = 1; j <= b.length; j++) current[j] = token === b[j - 1] ? previous[j - 1] + 1 : Math.max(previous[j], current[j - 1]);
    previous = current;
  }
  return previous[b.length];
}

/** ROUGE-L of one pair: the longest common subsequence's F-measure with β = 1 (rouge-score's `fmeasure`); 0 if either side has no token. */
export function rougeL(output: string, reference: string): number {
  const candidate = rougeTokens(output);
  const target = rougeTokens(reference);
  if (!candidate.length || !target.length) return 0;
  const lcs = lcsLength(candidate, target);
  if (!lcs) return 0;
  const precision = lcs / candidate.length;
  const recall = lcs / target.length;
  return (2 * precision * recall) / (precision + recall);
}

/** The mean of rougeL over the pairs, as rouge-score's scores are averaged. */
export function meanRougeL(outputs: string[], references: string[]): number {
  return outputs.length ? outputs.reduce((sum, output, i) => sum + rougeL(output, references[i]), 0) / outputs.length : 0;
}

// sacreBLEU's "13a" tokenizer (mteval-v13a.pl), rule for rule.
const TOKENIZER_13A: [RegExp, string][] = [
  [/([\{-\~\[-\` -\&\(-\+\:-\@\/])/g, " $1 "],
  [/([^0-9])([\.,])/g, "$1 $2 "],
  [/([\.,])([^0-9])/g, " $1 $2"],
  [/([0-9])(-)/g, "$1 $2 "],
];

export function tokenize13a(text: string): string[] {
  let line = text.trimEnd().replaceAll("<skipped>", "").replaceAll("-\n", "").replaceAll("\n", " ");
  if (line.includes("&")) line = line.replaceAll("&quot;", '"').replaceAll("&amp;", "&").replaceAll("&lt;", "<").replaceAll("&gt;", ">");
  line = ` ${line} `;
  for (const [pattern, replacement] of TOKENIZER_13A) line = line.replace(pattern, replacement);
  return line.split(/\s+/).filter(Boolean);
}

function ngramCounts(tokens: string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const gram = tokens.slice(i, i + n).join("\u0001");
    counts.set(gram, (counts.get(gram) ?? 0) + 1);
  }
  return counts;
}

export const BLEU_MAX_ORDER = 4;

/**
 * Corpus BLEU-4 on sacreBLEU's 0–100 scale with its defaults: 13a tokens, case kept, one reference per
 * output, n-gram precisions clipped by the reference's counts and summed over the corpus, uniform weights,
 * brevity penalty exp(1 − r/c) when the outputs are shorter, and "exp" smoothing (the k-th order with no
 * match counts as 1 / (2^k · total)). No match at any order is 0.
 */
export function corpusBleu(outputs: string[], references: string[]): number {
  const correct = new Array<number>(BLEU_MAX_ORDER).fill(0);
  const total = new Array<number>(BLEU_MAX_ORDER).fill(0);
  let outputLength = 0;
  let referenceLength = 0;
  outputs.forEach((output, i) => {
    const hypothesis = tokenize13a(output);
    const reference = tokenize13a(references[i]);
    outputLength += hypothesis.length;
    referenceLength += reference.length;
    for (let n = 1; n <= BLEU_MAX_ORDER; n++) {
      const referenceCounts = ngramCounts(reference, n);
      for (const [gram, count] of ngramCounts(hypothesis, n)) correct[n - 1] += Math.min(count, referenceCounts.get(gram) ?? 0);
      total[n - 1] += Math.max(0, hypothesis.length - n + 1);
    }
  });
  if (!correct.some(Boolean)) return 0;
  const brevityPenalty = outputLength < referenceLength ? (outputLength > 0 ? Math.exp(1 - referenceLength / outputLength) : 0) : 1;
  let smoothing = 1;
  let logSum = 0;
  for (let n = 0; n < BLEU_MAX_ORDER; n++) {
    // sacreBLEU stops at an order the outputs are too short for, leaving it (and the rest) at precision 0: a score of 0.
    if (total[n] === 0) return 0;
    let precision: number;
    if (correct[n] === 0) {
      smoothing *= 2;
      precision = 100 / (smoothing * total[n]);
    } else precision = (100 * correct[n]) / total[n];
    logSum += Math.log(precision);
  }
  return brevityPenalty * Math.exp(logSum / BLEU_MAX_ORDER);
}
