// The tiny decoder fixtures (part of the engine fixtures, generated on first use, gitignored). A fixtures
// folder made before the causal part existed gets only that part added.
import { existsSync } from "node:fs";
import { rename, rm } from "node:fs/promises";
import path from "node:path";
import { makeCausalFixtures } from "../../scripts/make-causal-fixtures.ts";
import { engineFixtures } from "./engine-fixtures.ts";

const STAMP = "chat-validation.jsonl";

export async function causalFixtures(): Promise<string> {
  const dir = path.join(await engineFixtures(), "causal");
  if (!existsSync(path.join(dir, STAMP))) {
    const tmp = `${dir}.tmp-${process.pid}`;
    await makeCausalFixtures(tmp);
    // The stamp file is written last, so a folder without it is an interrupted run's leftover.
    if (!existsSync(path.join(dir, STAMP))) await rm(dir, { recursive: true, force: true });
    try {
      await rename(tmp, dir);
    } catch {
      // Another test process generated the same fixtures first.
      await rm(tmp, { recursive: true, force: true });
    }
  }
  return dir;
}

export function causalModel(dir: string, name: string): string {
  return path.join(dir, name);
}
