// Shared checks of hand-written kernels and gradients against plain tfjs ops: seeded random
// tensors, element-wise closeness relative to the reference's largest value, and a function's
// value with its gradients for a random output weighting.
import assert from "node:assert/strict";
import * as tf from "@tensorflow/tfjs";
import { loadBlasAddon } from "../../services/trainer/native/blas.ts";
import type { Rng } from "../../services/trainer/rng.ts";

/** Why a test needing the addon is skipped, or false; CI builds the addon (scripts/setup.sh), so there a missing one fails. */
export function addonSkip(): string | false {
  const addon = loadBlasAddon();
  return !addon.ok && !process.env.CI ? `BLAS addon not built (${addon.reason}); run scripts/build-native.sh` : false;
}

/** Normal random tensors drawn from `rng`. */
export function randomTensors(rng: Rng): (shape: number[], std?: number) => tf.Tensor {
  return (shape, std = 1) => tf.tensor(rng.fill(tf.util.sizeFromShape(shape), (r) => r.normal(0, std)), shape);
}

export function assertClose(actual: tf.Tensor, expected: tf.Tensor, tolerance = 2e-4): void {
  assert.deepEqual(actual.shape, expected.shape);
  const a = actual.dataSync();
  const e = expected.dataSync();
  const scale = Array.from(e).reduce((max: number, value) => Math.max(max, Math.abs(Number(value))), 1e-3);
  for (let i = 0; i < e.length; i++) {
    if (!(Math.abs(a[i] - e[i]) <= tolerance * scale)) assert.fail(`element ${i}: ${a[i]} != ${e[i]} (shape ${expected.shape})`);
  }
}

/** Value and gradients (for a random output weighting) of `f` with respect to `inputs`. */
export function valueAndGradients(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], weighting: tf.Tensor): tf.Tensor[] {
  const value = f(...inputs);
  const grads = tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), weighting)))(inputs);
  return [value, ...grads];
}

export function assertSame(fast: tf.Tensor[], reference: tf.Tensor[], tolerance = 2e-4): void {
  assert.equal(fast.length, reference.length);
  fast.forEach((tensor, i) => assertClose(tensor, reference[i], tolerance));
}
