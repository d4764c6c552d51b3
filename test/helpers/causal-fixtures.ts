// The tiny decoder fixtures (part of the engine fixtures, generated on first use, gitignored). A fixtures
// folder made before the causal part existed, or before its last model was added, gets that part (re)made.
import path from "node:path";
import { makeCausalFixtures } from "../fixtures/make-causal-fixtures.ts";
import { engineFixtures, generateOnce } from "./engine-fixtures.ts";

export async function causalFixtures(): Promise<string> {
  return generateOnce(path.join(await engineFixtures(), "causal"), "specs.json", makeCausalFixtures);
}
