// The OpenBLAS matrix products of the wasm backend against tfjs's own cpu kernels, for every
// transpose and batch-broadcast form, odd and degenerate shapes, the fused kernel, and gradients.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { loadBlasAddon } from "../../services/trainer/native/blas.ts";

const addon = loadBlasAddon();
// CI builds the addon (scripts/setup.sh), so there a missing addon is a failure, not a skip.
const skip = !addon.ok && !process.env.CI ? `BLAS addon not built (${addon.reason}); run scripts/build-native.sh` : false;

function random(seed: number, size: number): Float32Array {
  const values = new Float32Array(size);
  let state = seed >>> 0;
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    values[i] = state / 2 ** 31 - 1;
  }
  return values;
}

function operand(shape: number[], seed: number): { shape: number[]; values: Float32Array } {
  return { shape, values: random(seed, tf.util.sizeFromShape(shape)) };
}

/** Runs `compute` on fresh copies of the operands on one backend and returns the values. */
async function on(
  backend: "cpu" | "wasm",
  operands: { shape: number[]; values: Float32Array }[],
  compute: (...tensors: tf.Tensor[]) => tf.Tensor | tf.Tensor[],
): Promise<{ shape: number[]; values: Float32Array }[]> {
  await tf.setBackend(backend);
  const tensors = operands.map(({ shape, values }) => tf.tensor(values, shape));
  const results = [compute(...tensors)].flat();
  const out = await Promise.all(results.map(async (t) => ({ shape: t.shape, values: (await t.data()) as Float32Array })));
  tf.dispose([...tensors, ...results]);
  return out;
}

function assertClose(actual: { shape: number[]; values: Float32Array }, expected: { shape: number[]; values: Float32Array }, k: number) {
  assert.deepEqual(actual.shape, expected.shape);
  const tolerance = 1e-5 * Math.max(1, Math.sqrt(k)) + 1e-6;
  for (let i = 0; i < expected.values.length; i++) {
    const difference = Math.abs(actual.values[i] - expected.values[i]);
    if (!(difference <= tolerance * Math.max(1, Math.abs(expected.values[i])))) {
      assert.fail(`element ${i}: ${actual.values[i]} != ${expected.values[i]} (shape ${expected.shape})`);
    }
  }
}

/** The product with each operand first broadcast to the full batch: the cpu kernel's plain case. */
function broadcastProduct(aShape: number[], bShape: number[], transposeA: boolean, transposeB: boolean) {
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(aShape.slice(0, -2), bShape.slice(0, -2));
  return (a: tf.Tensor, b: tf.Tensor) =>
    tf.matMul(
      tf.broadcastTo(a, [...outer, ...aShape.slice(-2)]),
      tf.broadcastTo(b, [...outer, ...bShape.slice(-2)]),
      transposeA,
      transposeB,
    );
}

function shapes(m: number, n: number, k: number, aOuter: number[], bOuter: number[], transposeA: boolean, transposeB: boolean) {
  return {
    a: [...aOuter, ...(transposeA ? [k, m] : [m, k])],
    b: [...bOuter, ...(transposeB ? [n, k] : [k, n])],
  };
}

const sizes: [number, number, number][] = [
  [1, 1, 1],
  [3, 5, 7],
  [17, 9, 33],
  [64, 48, 130],
  [1, 40, 9], // one row: the addon's matrix-vector path
  [40, 1, 9],
  [13, 11, 1],
];
const batchForms: [string, number[], number[]][] = [
  ["2-D", [], []],
  ["equal batches", [3], [3]],
  ["batched a, 2-D b", [4], []],
  ["2-D a, batched b", [], [4]],
  ["a batch of 1 against 3", [1], [3]],
  ["3 against a batch of 1", [3], [1]],
  ["rank 4, equal", [2, 3], [2, 3]],
  ["rank 4 against rank 3", [2, 3], [3]],
  ["rank 4, cross broadcast", [2, 1], [1, 3]],
];

describe("BLAS matrix products on the wasm backend", { skip }, () => {
  before(async () => {
    const info = await initBackend("wasm-blas");
    assert.equal(info.name, "wasm-blas");
  });

  for (const [form, aOuter, bOuter] of batchForms) {
    it(`matches the cpu kernel: ${form}, every transpose, odd sizes`, async () => {
      for (const transposeA of [false, true]) {
        for (const transposeB of [false, true]) {
          for (const [m, n, k] of sizes) {
            const s = shapes(m, n, k, aOuter, bOuter, transposeA, transposeB);
            const inputs = [operand(s.a, m * 7 + k), operand(s.b, n * 13 + k)];
            const [actual] = await on("wasm", inputs, (a, b) => tf.matMul(a, b, transposeA, transposeB));
            const [expected] = await on("cpu", inputs, broadcastProduct(s.a, s.b, transposeA, transposeB));
            assertClose(actual, expected, k);
          }
        }
      }
    });
  }

  it("handles zero-sized products: empty rows, columns and batches, and k = 0 giving zeros", async () => {
    for (const [aShape, bShape, outShape] of [
      [[0, 4], [4, 3], [0, 3]],
      [[2, 4], [4, 0], [2, 0]],
      [[0, 2, 4], [4, 3], [0, 2, 3]],
      [[2, 0], [0, 3], [2, 3]],
      [[2, 3, 0], [2, 0, 5], [2, 3, 5]],
    ]) {
      const [actual] = await on("wasm", [operand(aShape, 1), operand(bShape, 2)], (a, b) => tf.matMul(a, b));
      assertClose(actual, { shape: outShape, values: new Float32Array(tf.util.sizeFromShape(outShape)) }, 1);
    }
  });

  it("rejects mismatched inner dimensions like tfjs does", async () => {
    await tf.setBackend("wasm");
    assert.throws(() => tf.matMul(tf.zeros([2, 3]), tf.zeros([4, 5])), /inner/);
  });

  it("fuses bias and relu (and falls back to tfjs for other activations)", async () => {
    for (const activation of ["linear", "relu", "elu"] as const) {
      for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]]) {
        const s = shapes(19, 23, 29, [2], [], transposeA, transposeB);
        const inputs = [operand(s.a, 3), operand(s.b, 4), operand([23], 5)];
        const fused = (a: tf.Tensor, b: tf.Tensor, bias: tf.Tensor) =>
          tf.fused.matMul({ a, b, bias, transposeA, transposeB, activation });
        const [actual] = await on("wasm", inputs, fused);
        const [expected] = await on("cpu", inputs, fused);
        assertClose(actual, expected, 29);
      }
    }
    const inputs = [operand([5, 7], 6), operand([7, 3], 7), operand([5, 3], 8)];
    const fullBias = (a: tf.Tensor, b: tf.Tensor, bias: tf.Tensor) => tf.fused.matMul({ a, b, bias, activation: "relu" });
    assertClose((await on("wasm", inputs, fullBias))[0], (await on("cpu", inputs, fullBias))[0], 7);
  });

  // tfjs's matMul gradient does not sum over broadcast batch dimensions (it throws on a shape
  // mismatch on every backend), so gradients are compared where no operand is broadcast.
  it("gives the same gradients through matMul as the cpu kernels, for every transpose", async () => {
    for (const [aOuter, bOuter] of [[[], []], [[3], [3]], [[2, 3], [2, 3]]]) {
      for (const [transposeA, transposeB] of [[false, false], [true, false], [false, true], [true, true]]) {
        const s = shapes(6, 5, 7, aOuter, bOuter, transposeA, transposeB);
        const outShape = [...tf.broadcast_util.assertAndGetBroadcastShape(aOuter, bOuter), 6, 5];
        const inputs = [operand(s.a, 9), operand(s.b, 10), operand(outShape, 11)];
        const gradients = (a: tf.Tensor, b: tf.Tensor, weight: tf.Tensor) =>
          tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, transposeA, transposeB), weight)))([a, b]);
        const actual = await on("wasm", inputs, gradients);
        const expected = await on("cpu", inputs, gradients);
        actual.forEach((gradient, i) => assertClose(gradient, expected[i], 7 * 6));
      }
    }
  });

  it("trains a small attention block to the same losses as the cpu backend", async () => {
    const [batch, tokens, width, heads] = [2, 5, 12, 3];
    const inputs = [operand([batch * tokens, width], 20), operand([width, 3 * width], 21), operand([width, 2], 22), operand([3 * width], 23)];
    const train = (x: tf.Tensor, w0: tf.Tensor, h0: tf.Tensor, b0: tf.Tensor) => {
      const w = tf.variable(w0);
      const head = tf.variable(h0);
      const bias = tf.variable(b0);
      // Plain SGD: Adam would blow the float noise of the key bias (its true gradient is zero) up to full steps.
      const optimizer = tf.train.sgd(0.2);
      const losses: tf.Tensor[] = [];
      for (let step = 0; step < 5; step++) {
        const loss = optimizer.minimize(() => {
          const [q, k, v] = tf.split(tf.fused.matMul({ a: x, b: w, bias }), 3, -1).map((t) =>
            tf.transpose(tf.reshape(t, [batch, tokens, heads, width / heads]), [0, 2, 1, 3]),
          );
          const attention = tf.softmax(tf.div(tf.matMul(q, k, false, true), Math.sqrt(width / heads)));
          const mixed = tf.reshape(tf.transpose(tf.matMul(attention, v), [0, 2, 1, 3]), [batch * tokens, width]);
          return tf.mean(tf.square(tf.matMul(mixed, head)));
        }, true) as tf.Scalar;
        losses.push(loss);
      }
      const result = [tf.stack(losses), w.clone(), head.clone(), bias.clone()];
      tf.dispose([w, head, bias]);
      optimizer.dispose();
      return result;
    };
    const actual = await on("wasm", inputs, train);
    const expected = await on("cpu", inputs, train);
    actual.forEach((result, i) => assertClose(result, expected[i], 50));
  });
});
