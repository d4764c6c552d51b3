// A worker sandbox trains many jobs: base models are loaded once and shared between them.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { before, describe, it } from "node:test";
import { loadPretrainedShared } from "../../services/trainer/tasks/classification/load.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

describe("shared base models for training", () => {
  before(async () => {
    await engineFixtures();
  });

  it("loads a base model once, reloads it when its weights file changes, and keeps at most MODEL_CACHE_SIZE", async () => {
    const first = await loadPretrainedShared(fixtureModel("distilbert-cls"), 2);
    assert.equal(await loadPretrainedShared(fixtureModel("distilbert-cls"), 2), first);

    const copy = await fs.mkdtemp(path.join(os.tmpdir(), "lora-model-cache-"));
    await fs.cp(fixtureModel("distilbert-cls"), copy, { recursive: true });
    const copied = await loadPretrainedShared(copy, 2);
    assert.notEqual(copied, first);
    const later = new Date(Date.now() + 5000);
    await fs.utimes(path.join(copy, "model.safetensors"), later, later);
    assert.notEqual(await loadPretrainedShared(copy, 2), copied, "a replaced weights file is loaded afresh");

    // Capacity 2 (MODEL_CACHE_SIZE's default): a third model pushes out the least recently used one.
    await loadPretrainedShared(fixtureModel("bert-cls"), 2);
    assert.notEqual(await loadPretrainedShared(fixtureModel("distilbert-cls"), 2), first);
    await fs.rm(copy, { recursive: true, force: true });
  });
});
