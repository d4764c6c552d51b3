// The engine against an independent PyTorch implementation of Hugging Face's forward passes
// (test/reference/hf_reference.py): committed goldens always, a live run when torch is importable.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { before, test } from "node:test";
import { initBackend } from "../../services/trainer/backend.ts";
import { engineFixtures } from "../helpers/engine-fixtures.ts";
import { buildReferenceCases, engineOutputs, maxAbsDiff, type ReferenceResult } from "../reference/cases.ts";
import { liveReferenceSkip } from "../reference/python.ts";
import { GOLDEN_FILE, runReference } from "../reference/write-goldens.ts";

const TOLERANCE = 1e-4;
let fixtures: string;

before(async () => {
  await initBackend("wasm");
  fixtures = await engineFixtures();
});

const sha256 = async (file: string) => createHash("sha256").update(await readFile(file)).digest("hex");

async function compare(name: string, reference: ReferenceResult, diagnostic: (message: string) => void): Promise<void> {
  const engine = await engineOutputs(fixtures, name, reference);
  const hidden = maxAbsDiff(engine.clsHidden, reference.cls_hidden);
  const adapter = maxAbsDiff(engine.adapterLogits, reference.adapter_logits);
  const logits = reference.logits ? maxAbsDiff(engine.logits!, reference.logits) : undefined;
  diagnostic(`${name}: max |Δ| cls hidden ${hidden.toExponential(2)}, logits ${logits?.toExponential(2) ?? "n/a (bare model)"}, adapter logits ${adapter.toExponential(2)}`);
  assert.ok(hidden < TOLERANCE, `${name} hidden ${hidden}`);
  assert.ok(adapter < TOLERANCE, `${name} adapter logits ${adapter}`);
  if (reference.logits) assert.ok(logits! < TOLERANCE, `${name} logits ${logits}`);
  assert.equal(engine.logits === null, reference.logits === null);
}

test("engine outputs match the committed PyTorch reference within 1e-4", async (t) => {
  const golden = JSON.parse(await readFile(GOLDEN_FILE, "utf8")) as { cases: Record<string, ReferenceResult> };
  const cases = await buildReferenceCases(fixtures);
  assert.deepEqual(Object.keys(cases).sort(), Object.keys(golden.cases).sort());
  for (const [name, reference] of Object.entries(golden.cases)) {
    const stale = "fixtures differ from those the goldens were made from: run npx tsx test/reference/write-goldens.ts";
    assert.equal(await sha256(path.join(fixtures, name, "model.safetensors")), reference.weights_sha256, stale);
    assert.equal(await sha256(path.join(fixtures, reference.adapter, "adapter_model.safetensors")), reference.adapter_sha256, stale);
    assert.deepEqual(cases[name].input_ids, reference.input_ids, `${name}: tokenization changed`);
    await compare(name, reference, (m) => t.diagnostic(m));
  }
});

test("engine outputs match a live run of the PyTorch reference on other inputs", { skip: liveReferenceSkip }, async (t) => {
  const texts = ["Hello, world!", "我 love this film ... or do i?", "x"];
  const output = await runReference(fixtures, await buildReferenceCases(fixtures, texts, 12));
  for (const [name, reference] of Object.entries(output.cases as Record<string, ReferenceResult>)) await compare(name, reference, (m) => t.diagnostic(m));
});
