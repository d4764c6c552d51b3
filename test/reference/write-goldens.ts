// Regenerates test/fixtures/golden/hf-reference.json with the PyTorch reference:
//   npx tsx test/reference/write-goldens.ts   (needs /usr/bin/python3 with torch)
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { engineFixtures } from "../helpers/engine-fixtures.ts";
import { buildReferenceCases } from "./cases.ts";
import { PYTHON } from "./python.ts";

export const GOLDEN_FILE = path.join(import.meta.dirname, "..", "fixtures", "golden", "hf-reference.json");

/** Runs hf_reference.py on the cases and returns its parsed output. */
export async function runReference(fixturesDir: string, cases: object): Promise<{ torch: string; cases: Record<string, unknown> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "hf-ref-"));
  await writeFile(path.join(dir, "cases.json"), JSON.stringify(cases));
  execFileSync(PYTHON, [path.join(import.meta.dirname, "hf_reference.py"), "--fixtures", fixturesDir, "--cases", path.join(dir, "cases.json"), "--out", path.join(dir, "out.json")], { stdio: "inherit" });
  return JSON.parse(await readFile(path.join(dir, "out.json"), "utf8"));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const fixtures = await engineFixtures();
  const output = await runReference(fixtures, await buildReferenceCases(fixtures));
  await mkdir(path.dirname(GOLDEN_FILE), { recursive: true });
  await writeFile(GOLDEN_FILE, JSON.stringify(output) + "\n");
  console.log(`wrote ${GOLDEN_FILE} (torch ${output.torch})`);
}
