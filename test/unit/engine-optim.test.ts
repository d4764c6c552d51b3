import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { balancedClassWeights } from "../../services/trainer/tasks/classification/data.ts";
import { epochBatches, splitValidation } from "../../services/trainer/data/batching.ts";
import { crossEntropy } from "../../services/trainer/losses.ts";
import { AdamW, clipByGlobalNorm, scheduleFactor, warmupSteps } from "../../services/trainer/optim.ts";
import { Rng } from "../../services/trainer/rng.ts";

before(async () => {
  await initBackend("wasm");
});

test("AdamW follows torch.optim.AdamW: decoupled decay, bias correction; 1-D parameters are not decayed", () => {
  const [lr, wd, b1, b2, eps] = [0.1, 0.05, 0.9, 0.999, 1e-8];
  const optimizer = new AdamW({ beta1: b1, beta2: b2, epsilon: eps, weightDecay: wd });
  const start = { weight: [0.5, -1, 2, 0.25], bias: [0.1, -0.2] };
  const params = new Map<string, tf.Variable>([
    ["weight", tf.variable(tf.tensor2d(start.weight, [2, 2]))],
    ["bias", tf.variable(tf.tensor1d(start.bias))],
  ]);
  const gradients = [
    { weight: [0.3, -0.1, 0.02, 1], bias: [0.5, 0] },
    { weight: [-0.2, 0.4, 0.0, -1], bias: [0.25, -0.5] },
    { weight: [0.1, 0.1, -0.3, 0.5], bias: [-1, 2] },
  ];
  const expected = { weight: [...start.weight], bias: [...start.bias] };
  const moments = { weight: { m: [0, 0, 0, 0], v: [0, 0, 0, 0] }, bias: { m: [0, 0], v: [0, 0] } };
  gradients.forEach((step, index) => {
    const t = index + 1;
    optimizer.apply(params, new Map<string, tf.Tensor>([["weight", tf.tensor2d(step.weight, [2, 2])], ["bias", tf.tensor1d(step.bias)]]), lr, t);
    for (const name of ["weight", "bias"] as const) {
      expected[name] = expected[name].map((p, i) => {
        const g = step[name][i];
        const decayed = name === "weight" ? p * (1 - lr * wd) : p;
        moments[name].m[i] = b1 * moments[name].m[i] + (1 - b1) * g;
        moments[name].v[i] = b2 * moments[name].v[i] + (1 - b2) * g * g;
        const mHat = moments[name].m[i] / (1 - b1 ** t);
        const vHat = moments[name].v[i] / (1 - b2 ** t);
        return decayed - (lr * mHat) / (Math.sqrt(vHat) + eps);
      });
    }
  });
  for (const name of ["weight", "bias"] as const) {
    const got = params.get(name)!.dataSync();
    expected[name].forEach((value, i) => assert.ok(Math.abs(got[i] - value) < 1e-6, `${name}[${i}] ${got[i]} vs ${value}`));
  }
  assert.deepEqual([...optimizer.moments.keys()], ["weight", "bias"]);
});

test("warmup then linear or cosine decay, as transformers' schedules", () => {
  assert.equal(warmupSteps(10, 0.2), 2);
  const linear = Array.from({ length: 10 }, (_, s) => scheduleFactor(s, 10, 2, "linear"));
  assert.deepEqual(linear, [0, 0.5, 1, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8]);
  assert.equal(scheduleFactor(2, 10, 2, "cosine"), 1);
  assert.ok(Math.abs(scheduleFactor(6, 10, 2, "cosine") - 0.5) < 1e-12);
  assert.ok(scheduleFactor(9, 10, 2, "cosine") < 0.05);
});

test("gradient clipping scales the global norm down to the maximum and leaves small gradients alone", () => {
  const grads = new Map([["a", tf.tensor1d([3])], ["b", tf.tensor1d([4])]]);
  assert.equal(clipByGlobalNorm(grads, 1), 5);
  assert.ok(Math.abs(grads.get("a")!.dataSync()[0] - 0.6) < 1e-6);
  assert.ok(Math.abs(grads.get("b")!.dataSync()[0] - 0.8) < 1e-6);
  const small = new Map([["a", tf.tensor1d([0.3])]]);
  clipByGlobalNorm(small, 1);
  assert.equal(small.get("a")!.dataSync()[0], Float32Array.from([0.3])[0]);
});

test("epoch batches: every example once, length-bucketed, reproducible from (seed, epoch)", () => {
  const rng = new Rng(1);
  const lengths = Array.from({ length: 100 }, () => 1 + rng.int(50));
  const batches = epochBatches(lengths, 8, 42, 0);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), lengths.map((_, i) => i));
  assert.equal(batches.length, 13);
  assert.deepEqual(epochBatches(lengths, 8, 42, 0), batches);
  assert.notDeepEqual(epochBatches(lengths, 8, 42, 1), batches);
  assert.notDeepEqual(epochBatches(lengths, 8, 43, 0), batches);
  // With one window, batches are contiguous runs of the length-sorted order: no two overlap in length range.
  const ranges = batches.map((batch) => [Math.min(...batch.map((i) => lengths[i])), Math.max(...batch.map((i) => lengths[i]))]);
  ranges.sort((x, y) => y[1] - x[1] || y[0] - x[0]);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i][1] <= ranges[i - 1][0], `batch ranges ${ranges[i - 1]} and ${ranges[i]} overlap`);
});

test("seeded validation split holds out the requested fraction", () => {
  const records = Array.from({ length: 20 }, (_, i) => i);
  const { train, validation } = splitValidation(records, 0.25, 5);
  assert.equal(validation.length, 5);
  assert.deepEqual([...train, ...validation].sort((a, b) => a - b), records);
  assert.deepEqual(splitValidation(records, 0.25, 5).validation, validation);
});

test("balanced class weights and the weighted cross-entropy", () => {
  assert.deepEqual(balancedClassWeights([0, 0, 0, 1], 2), [4 / 6, 2]);
  const logits = [[2, 0], [0, 1], [1, 1]];
  const labels = [0, 1, 1];
  const weights = [0.5, 2];
  const nll = logits.map((row, i) => Math.log(row.reduce((s, v) => s + Math.exp(v), 0)) - row[labels[i]]);
  const expected = nll.reduce((s, v, i) => s + v * weights[labels[i]], 0) / labels.reduce((s, l) => s + weights[l], 0);
  const got = tf.tidy(() => crossEntropy(tf.tensor2d(logits), labels, weights).dataSync()[0]);
  assert.ok(Math.abs(got - expected) < 1e-6);
  const plain = tf.tidy(() => crossEntropy(tf.tensor2d(logits), labels).dataSync()[0]);
  assert.ok(Math.abs(plain - nll.reduce((a, b) => a + b, 0) / 3) < 1e-6);
});
