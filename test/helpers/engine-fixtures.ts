// Generates the tiny Hugging Face fixtures on first use (gitignored), shared by every test file.
import { existsSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { makeFixtures } from "../../scripts/make-fixtures.ts";

export const FIXTURES_DIR = path.join(import.meta.dirname, "..", "fixtures", "generated");
const STAMP = "sentiment-validation.jsonl";

export async function engineFixtures(): Promise<string> {
  if (!existsSync(path.join(FIXTURES_DIR, STAMP))) {
    const tmp = `${FIXTURES_DIR}.tmp-${process.pid}`;
    await makeFixtures(tmp);
    // The stamp file is written last, so a folder without it is an interrupted run's leftover.
    if (!existsSync(path.join(FIXTURES_DIR, STAMP))) await rm(FIXTURES_DIR, { recursive: true, force: true });
    try {
      await rename(tmp, FIXTURES_DIR);
    } catch {
      // Another test process generated the same fixtures first.
      await rm(tmp, { recursive: true, force: true });
    }
  }
  return FIXTURES_DIR;
}

export function fixtureModel(name: string): string {
  return path.join(FIXTURES_DIR, name);
}
