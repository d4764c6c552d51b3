// Classification metrics from the logits of a validation set: the flat numbers every evaluation reports
// (loss, accuracy, macro-F1, per-class precision, recall and F1, expected calibration error), and the
// detail of the final report: confusion matrix, per-class table and, when examples carry a `group`, every
// metric per group with the largest gap between groups, so a model that serves one group worse shows it.

export interface ClassStats {
  precision: number;
  recall: number;
  f1: number;
  /** Examples whose actual class this is. */
  support: number;
}

export interface GroupStats {
  count: number;
  loss: number;
  accuracy: number;
  macro_f1: number;
  ece: number;
  perClass: Record<string, ClassStats>;
}

export interface ClassificationDetail {
  labels: string[];
  /** Rows are actual classes, columns predicted ones, both in `labels` order. */
  confusionMatrix: number[][];
  perClass: Record<string, ClassStats>;
  ece: number;
  groups?: Record<string, GroupStats>;
  /** The metric (of GROUP_GAP_METRICS) whose best and worst group differ most: [best, worst]. */
  largestGroupGap?: { metric: string; groups: [string, string]; gap: number };
}

/** ECE: equal-width bins over the top-class probability, (0, 0.1], (0.1, 0.2], ... (0.9, 1]. */
export const ECE_BINS = 10;
/** Examples without a `group` when others have one are reported under this name. */
export const UNGROUPED = "(none)";
/** Metrics compared across groups, each higher-is-better. */
export const GROUP_GAP_METRICS = ["accuracy", "macro_f1"] as const;

export function confusionMatrix(predicted: number[], actual: number[], classes: number): number[][] {
  const matrix = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  actual.forEach((label, i) => matrix[label][predicted[i]]++);
  return matrix;
}

/** Precision, recall and F1 per class from a confusion matrix; as scikit-learn with zero_division=0, an undefined ratio is 0. */
export function perClassStats(matrix: number[][], labels: string[]): Record<string, ClassStats> {
  const stats: Record<string, ClassStats> = {};
  labels.forEach((label, c) => {
    const truePositive = matrix[c][c];
    const support = matrix[c].reduce((a, b) => a + b, 0);
    const predictedPositive = matrix.reduce((sum, row) => sum + row[c], 0);
    const precision = predictedPositive ? truePositive / predictedPositive : 0;
    const recall = support ? truePositive / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    stats[label] = { precision, recall, f1, support };
  });
  return stats;
}

/**
 * Expected calibration error (Guo et al., 2017): examples are binned by confidence (the top-class
 * probability) into `bins` equal-width bins (lo, hi]; ECE = Σ (|bin| / n) · |accuracy(bin) − mean confidence(bin)|.
 */
export function expectedCalibrationError(confidence: number[], correct: boolean[], bins = ECE_BINS): number {
  const count = new Array<number>(bins).fill(0);
  const hits = new Array<number>(bins).fill(0);
  const confidenceSum = new Array<number>(bins).fill(0);
  confidence.forEach((p, i) => {
    // Compared with the edges themselves (not floor(p · bins)), so 0.3 falls in (0.2, 0.3] as written.
    let bin = 0;
    while (bin < bins - 1 && p > (bin + 1) / bins) bin++;
    count[bin]++;
    confidenceSum[bin] += p;
    if (correct[i]) hits[bin]++;
  });
  const n = confidence.length;
  if (!n) return 0;
  return count.reduce((ece, c, bin) => (c ? ece + (c / n) * Math.abs(hits[bin] / c - confidenceSum[bin] / c) : ece), 0);
}

function logSoftmax(row: number[]): number[] {
  const max = Math.max(...row);
  const logSum = Math.log(row.reduce((sum, value) => sum + Math.exp(value - max), 0)) + max;
  return row.map((value) => value - logSum);
}

interface Scored {
  predicted: number;
  actual: number;
  confidence: number;
  nll: number;
}

function summarize(scored: Scored[], labels: string[], macroOver: "all" | "present"): GroupStats & { confusion: number[][] } {
  const predicted = scored.map((s) => s.predicted);
  const actual = scored.map((s) => s.actual);
  const confusion = confusionMatrix(predicted, actual, labels.length);
  const allClasses = perClassStats(confusion, labels);
  // Within a group, macro-F1 averages the classes the group has (actual or predicted), as scikit-learn's f1_score
  // does without `labels`; a group that lacks a class is not marked down for it.
  const present = labels.filter((label, c) => macroOver === "all" || allClasses[label].support > 0 || predicted.includes(c));
  const perClass = Object.fromEntries(present.map((label) => [label, allClasses[label]]));
  const n = scored.length;
  return {
    confusion,
    count: n,
    loss: n ? scored.reduce((sum, s) => sum + s.nll, 0) / n : 0,
    accuracy: n ? scored.filter((s) => s.predicted === s.actual).length / n : 0,
    macro_f1: present.length ? present.reduce((sum, label) => sum + allClasses[label].f1, 0) / present.length : 0,
    ece: expectedCalibrationError(scored.map((s) => s.confidence), scored.map((s) => s.predicted === s.actual)),
    perClass,
  };
}

/** The largest best-minus-worst difference between groups over GROUP_GAP_METRICS; the first metric wins ties. */
export function largestGroupGap(groups: Record<string, GroupStats>): ClassificationDetail["largestGroupGap"] {
  const names = Object.keys(groups);
  if (names.length < 2) return undefined;
  let largest: ClassificationDetail["largestGroupGap"];
  for (const metric of GROUP_GAP_METRICS) {
    const ranked = [...names].sort((a, b) => groups[b][metric] - groups[a][metric] || a.localeCompare(b));
    const gap = groups[ranked[0]][metric] - groups[ranked.at(-1)!][metric];
    if (!largest || gap > largest.gap) largest = { metric, groups: [ranked[0], ranked.at(-1)!], gap };
  }
  return largest;
}

/**
 * Every classification metric from logits (argmax is the prediction; the loss is the mean cross-entropy).
 * Macro-F1 over the whole set averages every label of the model; `groups` (one per example, undefined for
 * none) adds the per-group detail when any example has one.
 */
export function classificationEvaluation(logits: number[][], actual: number[], labels: string[], groups?: (string | undefined)[]): { metrics: Record<string, number>; detail: ClassificationDetail } {
  const scored: Scored[] = logits.map((row, i) => {
    const logProbabilities = logSoftmax(row);
    const predicted = row.indexOf(Math.max(...row));
    return { predicted, actual: actual[i], confidence: Math.exp(logProbabilities[predicted]), nll: -logProbabilities[actual[i]] };
  });
  const overall = summarize(scored, labels, "all");
  const metrics: Record<string, number> = { loss: overall.loss, accuracy: overall.accuracy, macro_f1: overall.macro_f1, ece: overall.ece };
  for (const [label, stats] of Object.entries(overall.perClass)) {
    metrics[`precision/${label}`] = stats.precision;
    metrics[`recall/${label}`] = stats.recall;
    metrics[`f1/${label}`] = stats.f1;
  }
  const detail: ClassificationDetail = { labels, confusionMatrix: overall.confusion, perClass: overall.perClass, ece: overall.ece };
  if (groups?.some((group) => group !== undefined)) {
    const byGroup = new Map<string, Scored[]>();
    scored.forEach((s, i) => {
      const name = groups[i] ?? UNGROUPED;
      if (!byGroup.has(name)) byGroup.set(name, []);
      byGroup.get(name)!.push(s);
    });
    detail.groups = Object.fromEntries(
      [...byGroup.keys()].sort().map((name) => {
        const { confusion: _confusion, ...stats } = summarize(byGroup.get(name)!, labels, "present");
        return [name, stats];
      }),
    );
    detail.largestGroupGap = largestGroupGap(detail.groups);
    if (detail.largestGroupGap) metrics.largest_group_gap = detail.largestGroupGap.gap;
  }
  return { metrics, detail };
}
