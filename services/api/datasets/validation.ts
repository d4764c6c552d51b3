// Validates a JSONL upload as it streams past, without holding the file: splits lines on
// bytes, bounds each line's length, decodes strict UTF-8, checks each record with the
// engine's own record rules, and feeds each record to the quality report, which also gives
// the dataset's statistics.
import { checkRecord, detectFormat, type DatasetFormat } from "../../trainer/data/records.ts";
import type { LineProblem } from "../../trainer/data/jsonl.ts";
import type { LengthStats } from "../../trainer/data/length-stats.ts";
import { DatasetQualityAnalyzer, type QualityReport, type QualityThresholds } from "../../trainer/data/quality.ts";

const NEWLINE = 0x0a;
/** How many bad lines a 422 lists; the total is counted regardless. */
export const REPORTED_PROBLEMS = 20;

export interface DatasetStats {
  labelCounts?: Record<string, number>;
  length: LengthStats;
}

export type ValidationOutcome =
  | { ok: true; format: DatasetFormat; rows: number; stats: DatasetStats; qualityReport: QualityReport }
  | { ok: false; problems: LineProblem[]; problemCount: number };

export class JsonlUploadValidator {
  private format: DatasetFormat | undefined;
  private line = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private overlong = false;
  private rows = 0;
  private problemCount = 0;
  private readonly problems: LineProblem[] = [];
  private analyzer: DatasetQualityAnalyzer | undefined;
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });

  constructor(
    declaredFormat: DatasetFormat | undefined,
    private readonly maxLineBytes: number,
    private readonly thresholds: QualityThresholds,
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
    if (this.rows === 0 || !this.format || !this.analyzer) {
      return { ok: false, problems: [{ line: 0, reason: "the file holds no records" }], problemCount: 1 };
    }
    const qualityReport = this.analyzer.report(this.thresholds);
    const stats: DatasetStats = { length: qualityReport.stats.characters };
    if (qualityReport.stats.labelCounts) stats.labelCounts = qualityReport.stats.labelCounts;
    return { ok: true, format: this.format, rows: this.rows, stats, qualityReport };
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
    // Once a line is bad nothing is stored, so the report stops there.
    if (this.problemCount > 0) return;
    this.analyzer ??= new DatasetQualityAnalyzer(format);
    this.analyzer.add(this.line, check.record);
  }

  private problem(reason: string): void {
    this.problemCount += 1;
    if (this.problems.length < REPORTED_PROBLEMS) this.problems.push({ line: this.line, reason });
  }
}
