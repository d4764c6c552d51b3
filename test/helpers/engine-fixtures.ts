// Generates the tiny Hugging Face fixtures on first use (gitignored), shared by every test file.
import { existsSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { makeFixtures } from "../fixtures/make-fixtures.ts";

export const FIXTURES_DIR = path.join(import.meta.dirname, "..", "fixtures", "generated");

/**
 * Makes `dir` with `make` unless it is complete already. `make` writes `stamp` last, so a folder
 * without it is an interrupted run's leftover; concurrent test processes may race, and one wins.
 */
export async function generateOnce(dir: string, stamp: string, make: (dir: string) => Promise<void>): Promise<string> {
  if (existsSync(path.join(dir, stamp))) return dir;
  const tmp = `${dir}.tmp-${process.pid}`;
  await make(tmp);
  if (!existsSync(path.join(dir, stamp))) await rm(dir, { recursive: true, force: true });
  try {
    await rename(tmp, dir);
  } catch {
    // Another test process generated the same fixtures first.
    await rm(tmp, { recursive: true, force: true });
  }
  return dir;
}

export function engineFixtures(): Promise<string> {
  return generateOnce(FIXTURES_DIR, "sentiment-validation.jsonl", makeFixtures);
}

export function fixtureModel(name: string): string {
  return path.join(FIXTURES_DIR, name);
}
