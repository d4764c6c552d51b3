// Gradient checkpointing recomputes each decoder layer in the backward: the loss and every LoRA
// gradient must equal those of a step that keeps every intermediate (dropout masks replayed
// included), while the step's peak tensor memory falls; and a training run gives the same losses
// with it on as off.
import assert from "node:assert/strict";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend, train } from "../../services/trainer/index.ts";
import { Dropout } from "../../services/trainer/layers/lora-forward.ts";
import { adapterForwardOptions, loraKey } from "../../services/trainer/lora.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { loadCausalPretrained } from "../../services/trainer/tasks/causal-lm/load.ts";
import type { CausalLM } from "../../services/trainer/tasks/causal-lm/model.ts";
import { causalFixtures } from "../helpers/causal-fixtures.ts";
import { addonSkip } from "../helpers/kernel-checks.ts";

let fixtures: string;

before(async () => {
  await initBackend(addonSkip() ? "wasm" : "wasm-blas");
  fixtures = await causalFixtures();
});

const SETTINGS = { r: 4, alpha: 8, useRslora: false, dropout: 0.1 };

/** Loss, LoRA gradients (by key) and peak tensor bytes of one training step over two padded sequences. */
async function step(model: CausalLM, variables: Map<string, tf.Variable>, checkpointLayers: boolean) {
  const length = 12;
  const rng = new Rng(5);
  const ids = Int32Array.from({ length: 2 * length }, () => rng.int(model.config.vocabSize));
  const targets = tf.tidy(() => tf.oneHot(tf.tensor1d(ids, "int32"), model.config.vocabSize).cast("float32"));
  const grads = new Map<string, Float32Array>();
  let loss = NaN;
  const profile = await tf.profile(() => {
    const forward = { ...adapterForwardOptions(variables, SETTINGS, new Dropout("checkpoint-test")), checkpointLayers };
    const { value, grads: byName } = tf.variableGrads(
      () => tf.logSoftmax(model.logits(model.hidden({ ids, batchSize: 2, length }, forward))).mul(targets).sum().neg() as tf.Scalar,
      [...variables.values()],
    );
    loss = value.dataSync()[0];
    for (const [key, variable] of variables) grads.set(key, byName[variable.name].dataSync() as Float32Array);
    tf.dispose([value, ...Object.values(byName)]);
  });
  targets.dispose();
  return { loss, grads, peakBytes: profile.peakBytes };
}

for (const name of ["gpt2-tiny", "llama-tiny", "qwen2-tiny", "mistral-tiny"]) {
  test(`${name}: a checkpointed step gives the same loss and LoRA gradients, dropout included, at a lower peak`, async (t) => {
    const { model } = await loadCausalPretrained(path.join(fixtures, name));
    const rng = new Rng(11);
    const variables = new Map<string, tf.Variable>();
    // B non-zero, so that both LoRA matrices of every module get a gradient.
    for (const { name: module, inFeatures, outFeatures } of model.linearModules()) {
      variables.set(loraKey(module, "A"), tf.variable(tf.tensor2d(rng.fill(SETTINGS.r * inFeatures, (r) => r.normal(0, 0.1)), [SETTINGS.r, inFeatures])));
      variables.set(loraKey(module, "B"), tf.variable(tf.tensor2d(rng.fill(outFeatures * SETTINGS.r, (r) => r.normal(0, 0.1)), [outFeatures, SETTINGS.r])));
    }
    const plain = await step(model, variables, false);
    const recomputed = await step(model, variables, true);
    let worst = 0;
    for (const [key, want] of plain.grads) {
      const got = recomputed.grads.get(key)!;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
    }
    t.diagnostic(`loss ${plain.loss.toFixed(6)} vs ${recomputed.loss.toFixed(6)}, max |Δ| gradient ${worst.toExponential(2)}, peak ${plain.peakBytes} → ${recomputed.peakBytes} bytes`);
    assert.ok(Math.abs(plain.loss - recomputed.loss) <= 1e-6 * Math.abs(plain.loss), `loss ${recomputed.loss} vs ${plain.loss}`);
    assert.ok(worst <= 1e-6, `LoRA gradients differ by ${worst}`);
    assert.ok(recomputed.peakBytes < plain.peakBytes, `peak ${recomputed.peakBytes} not below ${plain.peakBytes}`);
    tf.dispose([...variables.values()]);
    model.dispose();
  });
}

test("training with gradientCheckpointing on gives the losses of the run with it off", async () => {
  const scratch = await mkdtemp(path.join(tmpdir(), "checkpointing-"));
  const run = async (gradientCheckpointing: "on" | "off") => {
    const losses: number[] = [];
    await train(
      {
        modelDir: path.join(fixtures, "llama-tiny"),
        trainFile: path.join(fixtures, "chat-train.jsonl"),
        outDir: path.join(scratch, gradientCheckpointing),
        lora: { r: 4, alpha: 8, dropout: 0.1, targetModules: ["all-linear"] },
        hyper: { epochs: 1, maxSteps: 4, batchSize: 4, learningRate: 1e-2, warmupRatio: 0, maxSeqLength: 48, seed: 9, gradientCheckpointing },
      },
      { onStep: ({ loss }) => void losses.push(loss) },
    );
    return losses;
  };
  const off = await run("off");
  const on = await run("on");
  assert.equal(on.length, 4);
  on.forEach((loss, i) => assert.ok(Math.abs(loss - off[i]) <= 1e-5, `step ${i + 1}: ${loss} vs ${off[i]}`));
});
