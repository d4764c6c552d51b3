// Validates a JSONL upload as it streams past, without holding the file: splits lines on
// bytes, bounds each line's length, decodes strict UTF-8, checks each record with the
// engine's own record rules and gathers the dataset's statistics.
import { checkRecord, detectFormat, type DatasetFormat, type DatasetRecord } from "../../trainer/data/records.ts";
import type { LineProblem } from "../../trainer/data/jsonl.ts";

const NEWLINE = 0x0a;
/** How many bad lines a 422 lists; the total is counted regardless. */
export const REPORTED_PROBLEMS = 20;

export interface LengthStats {
  min: number;
  max: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  histogram: { upTo: number; count: number }[];
}

export interface DatasetStats {
  labelCounts?: Record<string, number>;
  length: LengthStats;
}

export type ValidationOutcome =
  | { ok: true; format: DatasetFormat; rows: number; stats: DatasetStats }
  | { ok: false; problems: LineProblem[]; problemCount: number };

function lengthOf(record: DatasetRecord): number {
  if ("text" in record) return record.text.length;
  if ("prompt" in record) return record.prompt.length + record.completion.length;
  return record.messages.reduce((sum, message) => sum + message.content.length, 0);
}

function percentile(sorted: Float64Array, fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))];
}

/** Power-of-two buckets: compact, and readable for lengths spanning orders of magnitude. */
function lengthStats(lengths: number[]): LengthStats {
  const sorted = Float64Array.from(lengths).sort();
  const buckets = new Map<number, number>();
  for (const length of sorted) {
    const upTo = length <= 1 ? 1 : 2 ** Math.ceil(Math.log2(length));
    buckets.set(upTo, (buckets.get(upTo) ?? 0) + 1);
  }
  return {
    min: sorted[0],
    max: sorted[sorted.length - 1],
    mean: sorted.reduce((sum, value) => sum + value, 0) / sorted.length,
    p50: percentile(sorted, 0.5),
    p90: percentile(sorted, 0.9),
    p99: percentile(sorted, 0.99),
    histogram: [...buckets].map(([upTo, count]) => ({ upTo, count })),
  };
}

export class JsonlUploadValidator {
  private format: DatasetFormat | undefined;
  private line = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private overlong = false;
  private rows = 0;
  private problemCount = 0;
  private readonly problems: LineProblem[] = [];
  private readonly lengths: number[] = [];
  private readonly labelCounts = new Map<string, number>();
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });

  constructor(
    declaredFormat: DatasetFormat | undefined,
    private readonly maxLineBytes: number,
  ) {
    this.format = declaredFormat;
  }

  write(chunk: Buffer): void {
    let start = 0;
    for (let newline = chunk.indexOf(NEWLINE, start); newline !== -1; newline = chunk.indexOf(NEWLINE, start)) {
      this.append(chunk.subarray(start, newline));
      this.endLine();
      start = newline + 1;
    }
    this.append(chunk.subarray(start));
  }

  finish(): ValidationOutcome {
    if (this.pendingBytes > 0 || this.overlong) this.endLine();
    if (this.problemCount > 0) return { ok: false, problems: this.problems, problemCount: this.problemCount };
    if (this.rows === 0 || !this.format) {
      return { ok: false, problems: [{ line: 0, reason: "the file holds no records" }], problemCount: 1 };
    }
    const stats: DatasetStats = { length: lengthStats(this.lengths) };
    if (this.format === "classification") stats.labelCounts = Object.fromEntries([...this.labelCounts].sort(([a], [b]) => (a < b ? -1 : 1)));
    return { ok: true, format: this.format, rows: this.rows, stats };
  }

  private append(bytes: Buffer): void {
    if (this.overlong || bytes.length === 0) return;
    if (this.pendingBytes + bytes.length > this.maxLineBytes) {
      // Past the bound the line is already bad: stop buffering it, just find its end.
      this.overlong = true;
      this.pending = [];
      this.pendingBytes = 0;
      return;
    }
    this.pending.push(Buffer.from(bytes));
    this.pendingBytes += bytes.length;
  }

  private endLine(): void {
    this.line += 1;
    const bytes = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending, this.pendingBytes);
    const overlong = this.overlong;
    this.pending = [];
    this.pendingBytes = 0;
    this.overlong = false;
    if (overlong) return this.problem(`the line is longer than ${this.maxLineBytes} bytes`);
    this.checkLine(bytes);
  }

  private checkLine(bytes: Buffer): void {
    if (bytes.includes(0)) return this.problem("binary data (NUL byte) is not JSON");
    let text: string;
    try {
      text = this.decoder.decode(bytes);
    } catch {
      return this.problem("the line is not valid UTF-8");
    }
    if (this.line === 1 && text.startsWith("\uFEFF")) text = text.slice(1);
    if (text.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return this.problem(`invalid JSON: ${(error as Error).message}`);
    }
    const format = this.format ?? detectFormat(value);
    if (!format) return this.problem("no known format: expected text/label, prompt/completion or messages");
    this.format = format;
    const check = checkRecord(value, format);
    if (!check.ok) return this.problem(check.reason);
    this.rows += 1;
    this.lengths.push(lengthOf(check.record));
    if ("label" in check.record) this.labelCounts.set(check.record.label, (this.labelCounts.get(check.record.label) ?? 0) + 1);
  }

  private problem(reason: string): void {
    this.problemCount += 1;
    if (this.problems.length < REPORTED_PROBLEMS) this.problems.push({ line: this.line, reason });
  }
}
