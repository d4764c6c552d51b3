// The encoder blocks with hand-written gradients against the same maths written with plain tfjs
// ops (tfjs's own gradients), on the wasm backend the trainer uses: values and every gradient,
// frozen and trained weights, a separate (dropped-out) LoRA input and attention dropout.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { attention, gelu, layerNorm, linear } from "../../services/trainer/layers/fused.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { addonSkip, assertClose, assertSame, randomTensors, valueAndGradients } from "../helpers/kernel-checks.ts";

const rng = new Rng(11);
const random = randomTensors(rng);

describe("encoder blocks with hand-written gradients", () => {
  before(async () => {
    await initBackend("auto");
  });

  it("gelu matches x·Φ(x) and its gradient", () => {
    const x = random([6, 10], 2);
    const weighting = random([6, 10]);
    const plain = (t: tf.Tensor) => t.mul(0.5).mul(tf.erf(t.mul(Math.SQRT1_2)).add(1));
    assertSame(valueAndGradients(gelu, [x], weighting), valueAndGradients(plain, [x], weighting));
  });

  it("layerNorm matches the plain formula, with frozen and with trained scale and shift", () => {
    const x = random([5, 12], 3);
    const weighting = random([5, 12]);
    const plain = (t: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => {
      const { mean, variance } = tf.moments(t, -1, true);
      return t.sub(mean).div(variance.add(1e-5).sqrt()).mul(g).add(b);
    };
    const gamma = random([12]);
    const beta = random([12]);
    // Frozen: only x is an input of the block, so only its gradient exists.
    assertSame(valueAndGradients((t) => layerNorm(t as tf.Tensor2D, gamma, beta, 1e-5), [x], weighting), valueAndGradients((t) => plain(t, gamma, beta), [x], weighting));
    // Trained: gradients flow to trainable variables.
    const g = tf.variable(gamma);
    const b = tf.variable(beta);
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(layerNorm(x as tf.Tensor2D, g, b, 1e-5), weighting)) as tf.Scalar, [g, b]);
    const reference = tf.grads((gg: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(plain(x, gg, bb), weighting)))([gamma, beta]);
    assertClose(value, tf.sum(tf.mul(plain(x, gamma, beta), weighting)));
    assertClose(grads[g.name], reference[0]);
    assertClose(grads[b.name], reference[1]);
    tf.dispose([g, b]);
  });

  it("linear with a LoRA branch matches x·Wᵀ + b + s·(input·Aᵀ)·Bᵀ, with the branch input separate or shared", () => {
    const [n, inFeatures, out, r, scale] = [7, 9, 5, 3, 2];
    const x = random([n, inFeatures]);
    const dropped = random([n, inFeatures]);
    const weight = random([out, inFeatures]);
    const bias = random([out]);
    const a = random([r, inFeatures]);
    const b = random([out, r]);
    const weighting = random([n, out]);
    const plain = (t: tf.Tensor, input: tf.Tensor, aa: tf.Tensor, bb: tf.Tensor) =>
      t.matMul(weight, false, true).add(bias).add(input.matMul(aa, false, true).matMul(bb, false, true).mul(scale));
    const fastSeparate = (t: tf.Tensor, input: tf.Tensor, aa: tf.Tensor, bb: tf.Tensor) =>
      linear(t as tf.Tensor2D, { weight: weight as tf.Tensor2D }, bias, { input: input as tf.Tensor2D, a: aa as tf.Tensor2D, b: bb as tf.Tensor2D, scale });
    assertSame(valueAndGradients(fastSeparate, [x, dropped, a, b], weighting), valueAndGradients(plain, [x, dropped, a, b], weighting));
    // Shared input, the frozen weight kept pre-transposed ([in, out]) as the engine stores it.
    const transposedWeight = weight.transpose() as tf.Tensor2D;
    const fastShared = (t: tf.Tensor, aa: tf.Tensor, bb: tf.Tensor) =>
      linear(t as tf.Tensor2D, { transposedWeight }, bias, { input: t as tf.Tensor2D, a: aa as tf.Tensor2D, b: bb as tf.Tensor2D, scale });
    assertSame(valueAndGradients(fastShared, [x, a, b], weighting), valueAndGradients((t, aa, bb) => plain(t, t, aa, bb), [x, a, b], weighting));
  });

  it("linear gives weight and bias gradients when they are trained (full fine-tuning)", () => {
    const x = random([6, 4]);
    const w = tf.variable(random([3, 4]));
    const bias = tf.variable(random([3]));
    const weighting = random([6, 3]);
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(linear(x as tf.Tensor2D, { weight: w as tf.Tensor2D as tf.Variable<tf.Rank.R2> }, bias), weighting)) as tf.Scalar, [w, bias]);
    const reference = tf.grads((ww: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(x.matMul(ww, false, true).add(bb), weighting)))([w, bias]);
    assertClose(grads[w.name], reference[0]);
    assertClose(grads[bias.name], reference[1]);
    tf.dispose([w, bias]);
  });

  it("attention matches softmax(q·kᵀ·s + mask)·v, with and without a dropout mask", () => {
    const shape = [2, 3, 5, 4];
    const [q, k, v] = [random(shape), random(shape), random(shape)];
    const maskAdd = tf.tensor([0, 0, 0, -1e9, -1e9, 0, 0, 0, 0, 0], [2, 1, 1, 5]);
    const keep = tf.randomUniform([2, 3, 5, 5], 0, 1, "float32", 3).greaterEqual(0.3).cast("float32").div(0.7);
    const weighting = random(shape);
    for (const mask of [undefined, keep]) {
      const plain = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => {
        const p = tf.softmax(qq.matMul(kk, false, true).mul(0.5).add(maskAdd));
        return (mask ? p.mul(mask) : p).matMul(vv);
      };
      const fast = (qq: tf.Tensor, kk: tf.Tensor, vv: tf.Tensor) => attention(qq as tf.Tensor4D, kk as tf.Tensor4D, vv as tf.Tensor4D, maskAdd, 0.5, mask);
      assertSame(valueAndGradients(fast, [q, k, v], weighting), valueAndGradients(plain, [q, k, v], weighting));
    }
  });

  it("holds fewer tensor bytes between forward and backward than the plain ops", () => {
    const x = tf.variable(random([64, 256]));
    const plain = (t: tf.Tensor) => t.mul(0.5).mul(tf.erf(t.mul(Math.SQRT1_2)).add(1));
    const heldAtEndOfForward = (f: (t: tf.Tensor) => tf.Tensor) => {
      const before = tf.memory().numBytes;
      let held = 0;
      const { value, grads } = tf.variableGrads(() => {
        const loss = tf.sum(f(x)) as tf.Scalar;
        held = tf.memory().numBytes - before;
        return loss;
      }, [x]);
      tf.dispose([value, grads[x.name]]);
      return held;
    };
    const [fast, reference] = [heldAtEndOfForward(gelu), heldAtEndOfForward(plain)];
    assert.ok(fast * 3 <= reference, `gelu held ${fast} bytes against ${reference}`);
    x.dispose();
  });

  it("gives the gradient of an embedding lookup (UnsortedSegmentSum, missing from tfjs's wasm) as the cpu backend does", async () => {
    const table = rng.fill(7 * 3, (r) => r.normal(0, 1));
    const ids = [4, 0, 4, 6, 4, 1];
    const weighting = rng.fill(ids.length * 3, (r) => r.normal(0, 1));
    const gradient = () =>
      tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, tf.tensor1d(ids, "int32")).mul(tf.tensor(weighting, [ids.length, 3]))))(tf.tensor(table, [7, 3]));
    const active = tf.getBackend();
    const fast = gradient();
    const fastValues = { shape: fast.shape, values: fast.dataSync().slice() };
    await tf.setBackend("cpu");
    const reference = gradient();
    await tf.setBackend(active);
    assertClose(tf.tensor(fastValues.values, fastValues.shape), tf.tensor(reference.dataSync(), reference.shape));
  });

  it("gathers rows like the cpu backend and rejects an index outside the table", async () => {
    const table = tf.tensor(rng.fill(5 * 2 * 3, (r) => r.normal(0, 1)), [5, 2, 3]);
    const ids = tf.tensor2d([4, 0, 2, 2, 1, 3], [2, 3], "int32");
    const fast = tf.gather(table, ids);
    assert.deepEqual(fast.shape, [2, 3, 2, 3]);
    const fastValues = fast.dataSync().slice();
    const active = tf.getBackend();
    await tf.setBackend("cpu");
    const reference = tf.gather(table, ids).dataSync().slice();
    await tf.setBackend(active);
    assert.deepEqual(fastValues, reference);
    const outside = tf.tensor1d([1, 5], "int32");
    const before = tf.memory().numBytes;
    assert.throws(() => tf.gather(table, outside), /index 5 is not in \[0, 5\)/);
    assert.equal(tf.memory().numBytes, before);
  });

  it("shares buffers in the wasm Identity kernel and frees them only with the last user", () => {
    const before = tf.memory().numBytes;
    const x = random([4, 4]);
    const copy = x.clone();
    const backend = tf.backend() as unknown as { getMemoryOffset(dataId: object): number };
    assert.equal(backend.getMemoryOffset(copy.dataId), backend.getMemoryOffset(x.dataId));
    const values = x.dataSync().slice();
    x.dispose();
    assert.deepEqual(copy.dataSync(), values);
    copy.dispose();
    assert.equal(tf.memory().numBytes, before);
  });
});
