// The decoders on the addon's fused kernels (wasm-blas: GPT-2's and Llama's attention read by strides from
// the projection rows, rotary embedding on the rows, grouped-query heads repeated along them, layer norm)
// against the committed PyTorch reference, as causal-model.test.ts checks the plain wasm path.
import { before, test } from "node:test";
import { initBackend } from "../../services/trainer/backend.ts";
import { rowAttentionAvailable } from "../../services/trainer/layers/fused.ts";
import { readGolden, writeReferenceAdapters } from "../reference/causal-cases.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { compareWith, TOLERANCE } from "../helpers/causal-parity.ts";
import { addonSkip } from "../helpers/kernel-checks.ts";
import assert from "node:assert/strict";

let fixtures: string;

before(async () => {
  await initBackend("wasm-blas");
  fixtures = await causalFixtures();
  await writeReferenceAdapters(fixtures);
});

test(`on the fused kernels, logits bare and with an adapter, and LoRA gradients agree with the PyTorch reference within ${TOLERANCE}`, { skip: addonSkip() }, async (t) => {
  assert.ok(rowAttentionAvailable(), "the fused attention is registered");
  for (const line of await compareWith(fixtures, await readGolden(), true)) t.diagnostic(line);
});
