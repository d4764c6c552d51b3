// The dataset quality report: what in a dataset would quietly spoil a fine-tune (duplicates, near
// duplicates, one text with two labels, a starved class, blank examples, examples the model will
// truncate, validation examples that are also training examples), each finding with its count
// and line numbers. Pure computation over records fed one at a time, so the API can run it while
// an upload streams past and again, with a model's tokenizer, before a job is accepted.
import { hashPair, NEAR_DUPLICATE_JACCARD, NEAR_DUPLICATE_MAX_EXAMPLES, NearDuplicateIndex, normalizeText, SHINGLE_CHARS, signatureOf } from "./minhash.ts";
import { LengthList, type LengthStats } from "./length-stats.ts";
import { TextTable } from "./text-table.ts";
import type { DatasetFormat, DatasetRecord } from "./records.ts";

/** Line numbers a finding lists at most (its count covers all). */
export const REPORTED_LINES = 20;
/** A class is starved when the largest class has more than this many times its examples. */
export const IMBALANCE_RATIO = 10;

export type FindingCode = "exact_duplicate" | "near_duplicate" | "label_conflict" | "label_imbalance" | "empty_text" | "too_long" | "train_validation_leakage";

export interface QualityFinding {
  code: FindingCode;
  /** "blocking" when the finding crosses a threshold a job refuses (QualityThresholds). */
  severity: "warning" | "blocking";
  count: number;
  /** 1-based line numbers of the file, ascending, at most REPORTED_LINES. */
  lines: number[];
  message: string;
  examples?: unknown[];
}

export interface QualityStats {
  /** Characters each example gives the model (text; prompt + completion; every message's content). */
  characters: LengthStats;
  labelCounts?: Record<string, number>;
  /** Tokens per example with the job's model, before truncation; only in a job's preflight. */
  tokens?: LengthStats & { model: string; maxLength: number; truncated: number };
  nearDuplicates: { method: string; jaccard: number; examplesCompared: number };
}

export interface QualityReport {
  version: 1;
  examples: number;
  findings: QualityFinding[];
  stats: QualityStats;
}

/** What makes a job refuse its data (services/common/config.ts declares the defaults). */
export interface QualityThresholds {
  /** Refuse when more than this percentage of the validation examples are training examples too. */
  maxLeakagePercent: number;
  /** Refuse when more examples than this share their text with an example of another label. */
  maxLabelConflicts: number;
}

/** A job's model, to count tokens with: `count` is an example's length as the engine encodes it, untruncated. */
export interface TokenCounting {
  model: string;
  maxLength: number;
  count(record: DatasetRecord): number;
}

const separator = " \u241e ";

/**
 * "The text" of an example, as duplicates are judged: classification `text`; completion `prompt`
 * and `completion`; chat the user and assistant turns tagged with their roles, in order (system
 * messages are left out: datasets often repeat one system prompt in every example). Each part is
 * normalized (normalizeText) and the parts joined by a separator normalization cannot produce.
 */
export function comparableText(record: DatasetRecord): string {
  if ("text" in record) return normalizeText(record.text);
  if ("prompt" in record) return normalizeText(record.prompt) + separator + normalizeText(record.completion);
  return record.messages
    .filter((message) => message.role !== "system")
    .map((message) => `${message.role}: ${normalizeText(message.content)}`)
    .join(separator);
}

/** True when the example has nothing to learn from: its text, completion, or every assistant turn normalizes to nothing. */
function isEmpty(record: DatasetRecord, comparable: string): boolean {
  if ("text" in record) return comparable === "";
  if ("prompt" in record) return normalizeText(record.completion) === "";
  return record.messages.every((message) => message.role !== "assistant" || normalizeText(message.content) === "");
}

export function characterLength(record: DatasetRecord): number {
  if ("text" in record) return record.text.length;
  if ("prompt" in record) return record.prompt.length + record.completion.length;
  return record.messages.reduce((sum, message) => sum + message.content.length, 0);
}

/** Lines and examples of one finding as they are found: every occurrence counted, the first few kept. */
class FindingTally {
  count = 0;
  readonly lines: number[] = [];
  readonly examples: unknown[] = [];

  add(line: number, example?: unknown): void {
    this.count += 1;
    if (this.lines.length < REPORTED_LINES) this.lines.push(line);
    if (example !== undefined && this.examples.length < REPORTED_LINES) this.examples.push(example);
  }

  finding(code: FindingCode, severity: QualityFinding["severity"], message: string, withExamples = true): QualityFinding {
    const lines = [...this.lines].sort((a, b) => a - b);
    return { code, severity, count: this.count, lines, message, ...(withExamples && this.examples.length ? { examples: this.examples } : {}) };
  }
}

export class DatasetQualityAnalyzer {
  private examples = 0;
  private readonly characters = new LengthList();
  private readonly tokens = new LengthList();
  private readonly seen = new TextTable();
  private readonly nearIndex = new NearDuplicateIndex();
  private nearCompared = 0;
  private readonly labelLines = new Map<string, { index: number; count: number; lines: number[] }>();
  private readonly labelNames: string[] = [];
  private readonly duplicates = new FindingTally();
  private readonly nearDuplicates = new FindingTally();
  private readonly conflicts = new FindingTally();
  private readonly empties = new FindingTally();
  private readonly tooLong = new FindingTally();

  constructor(
    readonly format: DatasetFormat,
    private readonly tokenCounting?: TokenCounting,
  ) {}

  add(line: number, record: DatasetRecord): void {
    this.examples += 1;
    this.characters.push(characterLength(record));
    const label = "label" in record ? this.labelIndex(record.label, line) : -1;
    if (this.tokenCounting) {
      const tokens = this.tokenCounting.count(record);
      this.tokens.push(tokens);
      if (tokens > this.tokenCounting.maxLength) this.tooLong.add(line, { line, tokens });
    }
    const text = comparableText(record);
    if (isEmpty(record, text)) {
      this.empties.add(line);
      return;
    }
    const [high, low] = hashPair(text);
    const first = this.seen.find(high, low);
    if (first >= 0) {
      const firstLine = this.seen.lineAt(first);
      const firstLabel = this.seen.labelAt(first);
      if (firstLabel === label) this.duplicates.add(line, { line, duplicateOf: firstLine });
      else {
        if (!this.seen.conflicted(first)) this.conflicts.add(firstLine, { line: firstLine, label: this.labelNames[firstLabel] });
        this.seen.markConflicted(first);
        this.conflicts.add(line, { line, label: this.labelNames[label], conflictsWith: firstLine });
      }
      return;
    }
    this.seen.insert(high, low, line, label);
    if (this.nearCompared >= NEAR_DUPLICATE_MAX_EXAMPLES) return;
    this.nearCompared += 1;
    const signature = signatureOf(text);
    const similar = this.nearIndex.match(signature);
    if (similar) this.nearDuplicates.add(line, { line, similarTo: similar.id, similarity: similar.similarity });
    else this.nearIndex.add(line, signature);
  }

  /** Counts the label and answers its index; the first lines of each label are kept for the imbalance finding. */
  private labelIndex(label: string, line: number): number {
    let entry = this.labelLines.get(label);
    if (!entry) {
      entry = { index: this.labelNames.length, count: 0, lines: [] };
      this.labelNames.push(label);
      this.labelLines.set(label, entry);
    }
    entry.count += 1;
    if (entry.lines.length < REPORTED_LINES) entry.lines.push(line);
    return entry.index;
  }

  /** The line of a training example whose text (comparableText) equals this record's, if any. */
  lineOf(record: DatasetRecord): number | undefined {
    const text = comparableText(record);
    const [high, low] = hashPair(text);
    const slot = this.seen.find(high, low);
    return slot >= 0 ? this.seen.lineAt(slot) : undefined;
  }

  get count(): number {
    return this.examples;
  }

  report(thresholds: QualityThresholds): QualityReport {
    const findings: QualityFinding[] = [];
    const { duplicates, nearDuplicates, conflicts, empties, tooLong } = this;
    if (duplicates.count) findings.push(duplicates.finding("exact_duplicate", "warning", `${duplicates.count} example(s) repeat an earlier example's text${this.format === "classification" ? " and label" : ""} (after normalization)`));
    if (nearDuplicates.count) {
      findings.push(nearDuplicates.finding("near_duplicate", "warning", `${nearDuplicates.count} example(s) are near duplicates of an earlier one (estimated Jaccard similarity of character ${SHINGLE_CHARS}-grams ≥ ${NEAR_DUPLICATE_JACCARD})`));
    }
    if (conflicts.count) {
      const blocking = conflicts.count > thresholds.maxLabelConflicts;
      findings.push(conflicts.finding("label_conflict", blocking ? "blocking" : "warning", `${conflicts.count} example(s) share their text with an example of another label (allowed: ${thresholds.maxLabelConflicts})`));
    }
    const imbalance = this.imbalance();
    if (imbalance) findings.push(imbalance);
    if (empties.count) findings.push(empties.finding("empty_text", "warning", `${empties.count} example(s) have no text to learn from (only whitespace, punctuation or symbols)`, false));
    if (this.tokenCounting && tooLong.count) {
      const { model, maxLength } = this.tokenCounting;
      findings.push(tooLong.finding("too_long", "warning", `${tooLong.count} example(s) are longer than ${maxLength} tokens with ${model} and will be truncated`));
    }
    const stats: QualityStats = {
      characters: this.characters.stats(),
      nearDuplicates: { method: `MinHash (64 hashes, 16 bands × 4) over character ${SHINGLE_CHARS}-grams of the normalized text`, jaccard: NEAR_DUPLICATE_JACCARD, examplesCompared: this.nearCompared },
    };
    if (this.format === "classification") stats.labelCounts = Object.fromEntries([...this.labelLines].map(([label, entry]) => [label, entry.count] as const).sort(([a], [b]) => (a < b ? -1 : 1)));
    if (this.tokenCounting) stats.tokens = { ...this.tokens.stats(), model: this.tokenCounting.model, maxLength: this.tokenCounting.maxLength, truncated: tooLong.count };
    return { version: 1, examples: this.examples, findings, stats };
  }

  private imbalance(): QualityFinding | undefined {
    if (this.format !== "classification") return undefined;
    const classes = [...this.labelLines].map(([label, entry]) => ({ label, ...entry }));
    const examples = classes.map(({ label, count }) => ({ label, count }));
    if (classes.length === 1) return { code: "label_imbalance", severity: "warning", count: 0, lines: [], message: `every example has the label ${JSON.stringify(classes[0].label)}: there is nothing to tell apart`, examples };
    const largest = Math.max(...classes.map((entry) => entry.count));
    const starved = classes.filter((entry) => entry.count * IMBALANCE_RATIO < largest);
    if (starved.length === 0) return undefined;
    const lines = starved.flatMap((entry) => entry.lines).sort((a, b) => a - b).slice(0, REPORTED_LINES);
    const names = starved.map((entry) => `${JSON.stringify(entry.label)} (${entry.count})`).join(", ");
    return {
      code: "label_imbalance",
      severity: "warning",
      count: starved.reduce((sum, entry) => sum + entry.count, 0),
      lines,
      message: `label(s) ${names} have under 1/${IMBALANCE_RATIO} of the largest class's ${largest} examples; consider hyperparameters.classWeights "balanced"`,
      examples,
    };
  }
}

/** Validation examples whose text a training example has (exact after normalization); lines are the validation file's. */
export class LeakageCheck {
  private examples = 0;
  private readonly overlap = new FindingTally();

  constructor(private readonly train: DatasetQualityAnalyzer) {}

  add(line: number, record: DatasetRecord): void {
    this.examples += 1;
    const trainLine = this.train.lineOf(record);
    if (trainLine !== undefined) this.overlap.add(line, { validationLine: line, trainLine });
  }

  finding(thresholds: QualityThresholds): QualityFinding | undefined {
    if (this.overlap.count === 0) return undefined;
    const percent = (100 * this.overlap.count) / this.examples;
    const severity = percent > thresholds.maxLeakagePercent ? "blocking" : "warning";
    const message = `${this.overlap.count} of ${this.examples} validation example(s) (${percent.toFixed(1)} %) also appear in the training set (allowed: ${thresholds.maxLeakagePercent} %); line numbers are the validation file's`;
    return this.overlap.finding("train_validation_leakage", severity, message);
  }
}

/** The findings that make a job refuse the dataset. */
export const blockingFindings = (report: QualityReport) => report.findings.filter((finding) => finding.severity === "blocking");
