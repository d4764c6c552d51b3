// Regenerates test/fixtures/golden/causal-logits.json with the causal PyTorch reference:
//   npx tsx test/reference/write-causal-goldens.ts   (needs /usr/bin/python3 with torch)
import { writeFile } from "node:fs/promises";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { CAUSAL_GOLDEN_FILE, runCausalReference } from "./causal-cases.ts";

const golden = await runCausalReference(await causalFixtures());
await writeFile(CAUSAL_GOLDEN_FILE, JSON.stringify(golden) + "\n");
console.log(`wrote ${CAUSAL_GOLDEN_FILE} (torch ${golden.torch})`);
