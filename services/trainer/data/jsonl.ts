// Reads JSONL line by line without holding the file in memory, numbering lines from 1.
import { createReadStream } from "node:fs";
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { checkRecord, detectFormat, type DatasetFormat, type DatasetRecord } from "./records.ts";

export interface LineProblem {
  line: number;
  reason: string;
}

export type JsonlEntry = { line: number; value: unknown } | { line: number; problem: string };

export async function* readJsonlLines(source: Readable): AsyncGenerator<JsonlEntry> {
  const lines = createInterface({ input: source, crlfDelay: Infinity });
  let line = 0;
  for await (const read of lines) {
    line += 1;
    // A byte order mark before the first record is not part of the JSON.
    const text = line === 1 && read.startsWith("\uFEFF") ? read.slice(1) : read;
    if (text.trim() === "") continue;
    if (text.includes("\u0000")) {
      yield { line, problem: "binary data (NUL byte) is not JSON" };
      continue;
    }
    try {
      yield { line, value: JSON.parse(text) };
    } catch (error) {
      yield { line, problem: `invalid JSON: ${(error as Error).message}` };
    }
  }
}

export class DatasetFileError extends Error {
  constructor(readonly problems: LineProblem[]) {
    super(`dataset has ${problems.length} bad line(s); first: line ${problems[0]?.line}: ${problems[0]?.reason}`);
    this.name = "DatasetFileError";
  }
}

/** Loads a whole JSONL file of one format (detected from the first record unless given). */
export async function loadDatasetFile(
  file: string,
  format?: DatasetFormat,
): Promise<{ format: DatasetFormat; records: DatasetRecord[] }> {
  const records: DatasetRecord[] = [];
  const problems: LineProblem[] = [];
  let resolved = format;
  for await (const entry of readJsonlLines(createReadStream(file))) {
    if ("problem" in entry) {
      problems.push({ line: entry.line, reason: entry.problem });
      continue;
    }
    resolved ??= detectFormat(entry.value);
    if (!resolved) {
      problems.push({ line: entry.line, reason: "no known format: expected text/label, prompt/completion or messages" });
      continue;
    }
    const check = checkRecord(entry.value, resolved);
    if (check.ok) records.push(check.record);
    else problems.push({ line: entry.line, reason: check.reason });
  }
  if (problems.length > 0) throw new DatasetFileError(problems);
  if (!resolved || records.length === 0) throw new DatasetFileError([{ line: 0, reason: "the file holds no records" }]);
  return { format: resolved, records };
}
