// The addon's fused training kernels (attention by strides, layer norm, RMSNorm, softmax cross-entropy,
// tanh GELU, SwiGLU's silu(gate)·up) against the same maths in plain tfjs ops with tfjs's own gradients,
// on the wasm backend: values and every gradient, for each shape class the models produce (separate
// q/k/v with a padding mask, one fused qkv with the causal mask over one or several of the addon's row
// blocks, attention dropout, a single token, odd sizes past the vector lanes, frozen and trained norm
// weights, labels outside the classes). The hand-written fallbacks of RMSNorm and the gating (no addon)
// are checked the same way on tfjs's cpu backend, where the kernels are not registered.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { activation, attentionOverRows, layerNorm, linear, rmsNorm, rowAttentionAvailable, siluGate, softmaxCrossEntropyRows } from "../../services/trainer/layers/fused.ts";
import { loadBlasAddon } from "../../services/trainer/native/blas.ts";
import { FUSED_KERNELS, hasFusedKernel } from "../../services/trainer/native/fused-kernels.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { addonSkip, assertClose, assertSame, randomTensors, valueAndGradients } from "../helpers/kernel-checks.ts";

const skip = addonSkip();

const rng = new Rng(23);
const random = randomTensors(rng);

/** Plain tfjs attention over [batch*length, heads*headSize] projections: split, softmax(q·kᵀ·s + mask)·(keep), merge. */
function plainAttention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, layout: { batch: number; heads: number; length: number; headSize: number }, scale: number, causal: boolean, maskAdd?: tf.Tensor, keep?: tf.Tensor) {
  const { batch, heads, length, headSize } = layout;
  const split = (x: tf.Tensor) => x.reshape([batch, length, heads, headSize]).transpose([0, 2, 1, 3]);
  let scores = split(q).matMul(split(k), false, true).mul(scale);
  if (maskAdd) scores = scores.add(maskAdd);
  if (causal) {
    const mask = new Float32Array(length * length);
    for (let i = 0; i < length; i++) for (let j = i + 1; j < length; j++) mask[i * length + j] = -1e9;
    scores = scores.add(tf.tensor2d(mask, [length, length]));
  }
  let probabilities = tf.softmax(scores);
  if (keep) probabilities = probabilities.mul(keep);
  return probabilities.matMul(split(v)).transpose([0, 2, 1, 3]).reshape([batch * length, heads * headSize]);
}

function keyMask(batch: number, length: number, padded: number[]): tf.Tensor {
  const values = new Float32Array(batch * length);
  padded.forEach((count, row) => {
    for (let j = length - count; j < length; j++) values[row * length + j] = -3.4028234663852886e38;
  });
  return tf.tensor(values, [batch, 1, 1, length]);
}

const plainRmsNorm = (x: tf.Tensor, w: tf.Tensor) => x.mul(x.square().mean(-1, true).add(1e-6).rsqrt()).mul(w);
const plainSiluGate = (gate: tf.Tensor, up: tf.Tensor) => gate.mul(tf.sigmoid(gate)).mul(up);
// One row; widths below and past the 8 and 16 vector lanes with a tail; several rows at a model's width.
const normShapes = [[1, 7], [5, 12], [3, 37], [33, 768]];
const gateShapes = [[1, 5], [4, 19], [9, 352]];

/** RMSNorm's value and x gradient with a frozen weight, then its value and weight gradient with a trained one. */
function checkRmsNorm(rows: number, d: number): void {
  const x = random([rows, d], 3).add(0.5);
  const weighting = random([rows, d]);
  const weight = random([d]).add(1);
  assertSame(valueAndGradients((t) => rmsNorm(t as tf.Tensor2D, weight, 1e-6), [x], weighting), valueAndGradients((t) => plainRmsNorm(t, weight), [x], weighting));
  const w = tf.variable(weight);
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(rmsNorm(x as tf.Tensor2D, w, 1e-6), weighting)) as tf.Scalar, [w]);
  assertClose(value, tf.sum(tf.mul(plainRmsNorm(x, weight), weighting)));
  assertClose(grads[w.name], tf.grad((ww: tf.Tensor) => tf.sum(tf.mul(plainRmsNorm(x, ww), weighting)))(weight));
  w.dispose();
}

/** silu(gate)·up and both gradients, with gates wide enough (±12) to saturate the sigmoid. */
function checkSiluGate(rows: number, width: number): void {
  const inputs = [random([rows, width], 4), random([rows, width])];
  const weighting = random([rows, width]);
  assertSame(valueAndGradients((g, u) => siluGate(g as tf.Tensor2D, u as tf.Tensor2D), inputs, weighting), valueAndGradients(plainSiluGate, inputs, weighting));
}

describe("fused training kernels of the addon against plain tfjs", { skip }, () => {
  before(async () => {
    await initBackend("wasm-blas");
  });

  it("are registered on wasm-blas", () => {
    for (const name of Object.values(FUSED_KERNELS)) assert.ok(hasFusedKernel(name), name);
    assert.ok(rowAttentionAvailable());
  });

  const attentionCases = [
    { name: "separate q/k/v, padding mask (encoder)", batch: 3, heads: 4, length: 7, headSize: 5, causal: false, padded: [0, 2, 6], dropout: false },
    { name: "separate q/k/v, padding mask and attention dropout", batch: 2, heads: 3, length: 6, headSize: 4, causal: false, padded: [1, 0], dropout: true },
    { name: "fused qkv, causal mask (GPT-2)", batch: 2, heads: 3, length: 9, headSize: 6, causal: true, padded: undefined, dropout: false },
    { name: "fused qkv, causal mask and attention dropout", batch: 2, heads: 2, length: 5, headSize: 3, causal: true, padded: undefined, dropout: true },
    // 150 rows: three causal row blocks of the addon (64, 64, 22), the last one partial.
    { name: "fused qkv, causal mask over several row blocks, attention dropout", batch: 2, heads: 2, length: 150, headSize: 8, causal: true, padded: undefined, dropout: true },
    { name: "a single token, one head", batch: 1, heads: 1, length: 1, headSize: 7, causal: true, padded: undefined, dropout: false },
  ];
  for (const c of attentionCases) {
    it(`attention: ${c.name}`, () => {
      const layout = { batch: c.batch, heads: c.heads, length: c.length, headSize: c.headSize };
      const rows = c.batch * c.length;
      const hd = c.heads * c.headSize;
      const scale = 1 / Math.sqrt(c.headSize);
      const maskAdd = c.padded ? keyMask(c.batch, c.length, c.padded) : undefined;
      const keep = c.dropout ? tf.randomUniform([c.batch, c.heads, c.length, c.length], 0, 1, "float32", 5).greaterEqual(0.3).cast("float32").div(0.7) : undefined;
      const weighting = random([rows, hd]);
      const options = { scale, causal: c.causal, keyMaskAdd: maskAdd, keep };
      if (c.causal) {
        const qkv = random([rows, 3 * hd], 2);
        const fast = (x: tf.Tensor) => attentionOverRows(x as tf.Tensor2D, x as tf.Tensor2D, x as tf.Tensor2D, layout, options);
        const plain = (x: tf.Tensor) => {
          const [q, k, v] = tf.split(x, 3, 1);
          return plainAttention(q, k, v, layout, scale, true, maskAdd, keep);
        };
        assertSame(valueAndGradients(fast, [qkv], weighting), valueAndGradients(plain, [qkv], weighting));
      } else {
        const inputs = [random([rows, hd], 2), random([rows, hd], 2), random([rows, hd])];
        const fast = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => attentionOverRows(q as tf.Tensor2D, k as tf.Tensor2D, v as tf.Tensor2D, layout, options);
        const plain = (q: tf.Tensor, k: tf.Tensor, v: tf.Tensor) => plainAttention(q, k, v, layout, scale, false, maskAdd, keep);
        assertSame(valueAndGradients(fast, inputs, weighting), valueAndGradients(plain, inputs, weighting));
      }
    });
  }

  const plainNorm = (t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
    const { mean, variance } = tf.moments(t, -1, true);
    return t.sub(mean).div(variance.add(1e-5).sqrt()).mul(g).add(b);
  };
  for (const [rows, d] of [[5, 12], [1, 7], [33, 768]]) {
    it(`layer norm, ${rows} × ${d}: frozen, then trained scale and shift`, () => {
      const x = random([rows, d], 3).add(1.5);
      const weighting = random([rows, d]);
      const gamma = random([d]);
      const beta = random([d]);
      assertSame(valueAndGradients((t) => layerNorm(t as tf.Tensor2D, gamma, beta, 1e-5), [x], weighting), valueAndGradients((t) => plainNorm(t, gamma, beta), [x], weighting));
      const g = tf.variable(gamma);
      const b = tf.variable(beta);
      const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(layerNorm(x as tf.Tensor2D, g, b, 1e-5), weighting)) as tf.Scalar, [g, b]);
      const reference = tf.grads((gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(plainNorm(x, gg, bb), weighting)))([gamma, beta]);
      assertClose(value, tf.sum(tf.mul(plainNorm(x, gamma, beta), weighting)));
      assertClose(grads[g.name], reference[0]);
      assertClose(grads[b.name], reference[1]);
      tf.dispose([g, b]);
    });
  }

  for (const [rows, d] of normShapes) {
    it(`RMSNorm, ${rows} × ${d}: frozen, then trained weight`, () => {
      assert.ok(hasFusedKernel(FUSED_KERNELS.rmsNorm));
      checkRmsNorm(rows, d);
    });
  }

  for (const [rows, width] of gateShapes) {
    it(`SwiGLU gating silu(gate)·up, ${rows} × ${width}`, () => {
      assert.ok(hasFusedKernel(FUSED_KERNELS.siluGate));
      checkSiluGate(rows, width);
    });
  }

  for (const [rows, classes] of [[6, 2], [4, 3], [9, 50257]]) {
    it(`softmax cross-entropy per row, ${rows} × ${classes}, with a label outside the classes`, () => {
      const logits = random([rows, classes], 4);
      const labels = Array.from({ length: rows }, (_, i) => (i === 1 ? -1 : (i * 7919) % classes));
      const ids = tf.tensor1d(labels, "int32");
      const weighting = random([rows]);
      const plain = (x: tf.Tensor) => tf.oneHot(ids, classes).mul(tf.logSoftmax(x)).sum(1).neg();
      assertSame(valueAndGradients((x) => softmaxCrossEntropyRows(x as tf.Tensor2D, ids), [logits], weighting), valueAndGradients(plain, [logits], weighting));
    });
  }

  it("tanh GELU (gelu_new) and its gradient", () => {
    const x = random([7, 13], 3);
    const weighting = random([7, 13]);
    const plain = (t: tf.Tensor) => t.mul(0.5).mul(tf.tanh(t.add(t.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI))).add(1));
    assertSame(valueAndGradients((t) => activation("gelu_new", t), [x], weighting), valueAndGradients(plain, [x], weighting));
  });

  it("linear without an input gradient (frozen layers below) gives the same LoRA gradients", () => {
    const x = random([6, 5]);
    const weight = random([5, 4]);
    const bias = random([4]);
    const a = tf.variable(random([2, 5]) as tf.Tensor2D, true);
    const b = tf.variable(random([4, 2]) as tf.Tensor2D, true);
    const weighting = random([6, 4]);
    const run = (inputGrad: boolean) =>
      tf.variableGrads(() => tf.sum(tf.mul(linear(x as tf.Tensor2D, { transposedWeight: weight as tf.Tensor2D }, bias, { input: x as tf.Tensor2D, a, b, scale: 2 }, { inputGrad }), weighting)) as tf.Scalar, [a, b]);
    const without = run(false);
    const withInput = run(true);
    assertClose(without.value, withInput.value);
    assertClose(without.grads[a.name], withInput.grads[a.name]);
    assertClose(without.grads[b.name], withInput.grads[b.name]);
    tf.dispose([a, b]);
  });

  it("refuses operands that do not match the layout", () => {
    const addon = loadBlasAddon();
    const fused = addon.ok ? addon.addon : undefined;
    assert.ok(fused?.attentionForward);
    const small = new Float32Array(4);
    assert.throws(
      () => fused.attentionForward!(small, small, small, new Int32Array(3), 4, 1, 1, 4, 4, 1, false, null, null, new Float32Array(16), new Float32Array(16)),
      /operand sizes/,
    );
    assert.throws(() => fused.layerNormForward!(new Float32Array(5), new Float32Array(2), new Float32Array(2), 1e-5, new Float32Array(5), new Float32Array(2), new Float32Array(2)), /layerNormForward/);
    assert.throws(() => fused.rmsNormForward!(new Float32Array(6), new Float32Array(3), 1e-6, new Float32Array(6), new Float32Array(3)), /rmsNormForward/);
    assert.throws(() => fused.rmsNormBackward!(new Float32Array(6), new Float32Array(6), new Float32Array(3), new Float32Array(2), new Float32Array(6), new Float32Array(2)), /rmsNormBackward/);
    assert.throws(() => fused.siluGateForward!(new Float32Array(4), new Float32Array(3), new Float32Array(4)), /siluGateForward/);
    const four = () => new Float32Array(4);
    assert.throws(() => fused.siluGateBackward!(four(), four(), four(), four(), new Float32Array(5)), /siluGateBackward/);
  });
});

describe("RMSNorm and SwiGLU gating without the addon (plain tfjs fallbacks) against tfjs's own gradients", () => {
  let previous: string;
  before(async () => {
    previous = tf.getBackend();
    await tf.setBackend("cpu");
  });
  after(async () => {
    await tf.setBackend(previous);
  });

  for (const [rows, d] of normShapes.slice(0, 3)) {
    it(`RMSNorm, ${rows} × ${d}: frozen, then trained weight`, () => {
      assert.ok(!hasFusedKernel(FUSED_KERNELS.rmsNorm));
      checkRmsNorm(rows, d);
    });
  }

  it("SwiGLU gating silu(gate)·up, 4 × 19", () => {
    assert.ok(!hasFusedKernel(FUSED_KERNELS.siluGate));
    checkSiluGate(4, 19);
  });
});
