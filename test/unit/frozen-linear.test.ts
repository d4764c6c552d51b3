// Frozen linear weights held by the addon (native/quant.c): NF4 reproduces its codebook exactly and
// picks bitsandbytes' codes, int8 and NF4 stay within their rounding bounds (double quantization too),
// a BF16 weight stays BF16 in "none" mode, and the tile-wise products x·Wᵀ and dy·W (with LoRA, bias
// and every gradient) match tfjs on the dequantized weight for shapes whose tiles and NF4 blocks are
// ragged.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { linear } from "../../services/trainer/layers/fused.ts";
import { createFrozenLinear, type SourceDtype } from "../../services/trainer/native/frozen-linear.ts";
import { serializeSafetensors, parseSafetensors } from "../../services/trainer/safetensors.ts";
import { Rng } from "../../services/trainer/rng.ts";
import type { Quantization } from "../../services/trainer/settings.ts";
import { addonSkip, assertSame, randomTensors, valueAndGradients } from "../helpers/kernel-checks.ts";

const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

const rng = new Rng(31);
const random = randomTensors(rng);

const f32Bytes = (values: Float32Array) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);

/** The bytes a checkpoint of `dtype` stores for `values`, and the values it then holds. */
function stored(values: Float32Array, shape: number[], dtype: SourceDtype): { bytes: Uint8Array; values: Float32Array } {
  const file = serializeSafetensors(new Map([["w", { shape, data: values }]]), dtype);
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  return { bytes: file.subarray(8 + headerLength), values: parseSafetensors(file).get("w")!.data };
}

function normals(count: number, std = 0.05): Float32Array {
  return rng.fill(count, (r) => r.normal(0, std));
}

describe("frozen linear weights on the addon", { skip: addonSkip() }, () => {
  before(async () => {
    await initBackend("wasm-blas");
  });

  it("NF4 reproduces the codebook exactly, at any block absmax", () => {
    for (const absmax of [1, 2.5, 0.0371]) {
      const values = Float32Array.from({ length: 2 * 64 }, (_, i) => Math.fround(Math.fround(NF4[(i * 7) % 16]) * Math.fround(absmax)));
      const weight = createFrozenLinear(f32Bytes(values), "F32", [4, 32], "nf4");
      assert.deepEqual(Array.from(weight.dequantize()), Array.from(values));
      assert.equal(weight.storage, "nf4");
      assert.equal(weight.bytes, 128 / 2 + 2 * 4, "two codes a byte, one float absmax per block of 64");
      weight.dispose();
    }
  });

  // bitsandbytes' quantize_4bit (its default torch backend): absmax per 64 consecutive weights of the
  // flattened tensor, x · (1 / absmax) in float32, the code of the nearest level (argmin, the lower
  // level on a tie), dequantized as level × absmax. Re-typed here and compared element for element.
  it("NF4 picks the code bitsandbytes' quantize_4bit picks, for every weight", () => {
    const [rows, cols] = [97, 201];
    const values = normals(rows * cols, 0.3);
    const got = createFrozenLinear(f32Bytes(values), "F32", [rows, cols], "nf4").dequantize();
    const levels = NF4.map(Math.fround);
    for (let block = 0; block < Math.ceil(values.length / 64); block++) {
      const slice = values.subarray(block * 64, (block + 1) * 64);
      const absmax = Math.max(...Array.from(slice, Math.abs));
      const inverse = Math.fround(1 / absmax);
      slice.forEach((x, i) => {
        const scaled = Math.fround(x * inverse);
        let code = 0;
        for (let c = 1; c < 16; c++) if (Math.fround(Math.abs(scaled - levels[c])) < Math.fround(Math.abs(scaled - levels[code]))) code = c;
        assert.equal(got[block * 64 + i], Math.fround(levels[code] * absmax), `element ${block * 64 + i}`);
      });
    }
  });

  it("int8 per output channel stays within half a step of each row's absmax / 127", () => {
    const [rows, cols] = [37, 90];
    const values = normals(rows * cols);
    const weight = createFrozenLinear(f32Bytes(values), "F32", [rows, cols], "int8");
    const back = weight.dequantize();
    for (let r = 0; r < rows; r++) {
      const row = values.subarray(r * cols, (r + 1) * cols);
      const step = Math.max(...Array.from(row, Math.abs)) / 127;
      for (let c = 0; c < cols; c++) assert.ok(Math.abs(back[r * cols + c] - row[c]) <= 0.5 * step * (1 + 1e-5), `row ${r} column ${c}`);
    }
    assert.equal(weight.bytes, rows * cols + 4 * rows);
    weight.dispose();
  });

  it("NF4 stays within half the widest codebook gap of each block's absmax; double quantization adds only the scales' rounding", () => {
    const [rows, cols] = [300, 100];
    const values = normals(rows * cols);
    const halfGap = Math.max(...NF4.slice(1).map((v, i) => (v - NF4[i]) / 2));
    const plain = createFrozenLinear(f32Bytes(values), "F32", [rows, cols], "nf4").dequantize();
    const double = createFrozenLinear(f32Bytes(values), "F32", [rows, cols], "nf4", true);
    const doubled = double.dequantize();
    let plainError = 0;
    let doubleError = 0;
    for (let block = 0; block < Math.ceil(values.length / 64); block++) {
      const slice = values.subarray(block * 64, (block + 1) * 64);
      const absmax = Math.max(...Array.from(slice, Math.abs));
      for (let i = 0; i < slice.length; i++) {
        const at = block * 64 + i;
        assert.ok(Math.abs(plain[at] - slice[i]) <= halfGap * absmax * (1 + 1e-5), `element ${at}`);
        plainError += Math.abs(plain[at] - slice[i]);
        doubleError += Math.abs(doubled[at] - slice[i]);
      }
    }
    assert.ok(doubleError < 1.05 * plainError, `double quantization error ${doubleError} vs ${plainError}`);
    const blocks = Math.ceil((rows * cols) / 64);
    assert.equal(double.bytes, (rows * cols) / 2 + blocks + 4 * Math.ceil(blocks / 256), "8-bit scales plus one float per 256 blocks");
    double.dispose();
  });

  it('"none" keeps a BF16 or F16 weight as stored: two bytes a weight, values exact', () => {
    // A length that is not a multiple of 8 (F16C converts 8 at a time), and F16 subnormals among them.
    const [rows, cols] = [23, 11];
    const source = normals(rows * cols).map((v, i) => (i % 5 === 0 ? v * 1e-3 : v));
    for (const dtype of ["BF16", "F16"] as const) {
      const { bytes, values } = stored(source, [rows, cols], dtype);
      const weight = createFrozenLinear(bytes, dtype, [rows, cols], "none");
      assert.equal(weight.storage, dtype);
      assert.equal(weight.bytes, 2 * rows * cols);
      assert.deepEqual(Array.from(weight.dequantize()), Array.from(values));
      weight.dispose();
    }
  });

  // [out, in]: one tile; NF4 blocks across rows; then weights past quant-matmul.c's 8 MiB scratch, in
  // several tiles with ragged last ones. Over twice as tall as wide (NF4 blocks across rows of 600 and
  // 1001 columns): x·Wᵀ by row tiles, dy·W by row tiles added up. Square-ish (1401 columns): x·Wᵀ by
  // row tiles, dy·W by column tiles whose row slices start inside an NF4 block, on odd nibbles too.
  // Over twice as wide (4101 columns): x·Wᵀ by column tiles added up, dy·W by column tiles. Each with
  // 6 input rows too, where every product takes whole-row tiles.
  const shapes = [[7, 5], [300, 1000], [130, 4100], [4100, 600], [2500, 1001], [1500, 1401], [600, 4101]];
  const modes: [Quantization, SourceDtype][] = [["none", "F32"], ["none", "BF16"], ["none", "F16"], ["int8", "F32"], ["nf4", "F32"], ["nf4", "BF16"]];
  for (const [out, inFeatures] of shapes) {
    // 64 input rows or more (quant-matmul.c's SMALL_M) before a product may take column tiles: 70 too
    // where some product then does (past the scratch, not over twice as tall as wide).
    const rowCounts = out * inFeatures > 1 << 21 && out <= 2 * inFeatures ? [6, 70] : [6];
    for (const [[mode, dtype], m] of modes.flatMap((mode) => rowCounts.map((rows) => [mode, rows] as const))) {
      it(`x·Wᵀ, dy·W and LoRA gradients match tfjs on the dequantized weight: [${out}, ${inFeatures}] ${mode} from ${dtype}, ${m} rows`, () => {
        const { bytes } = stored(normals(out * inFeatures), [out, inFeatures], dtype);
        const frozen = createFrozenLinear(bytes, dtype, [out, inFeatures], mode, mode === "nf4");
        const weight = tf.tensor2d(frozen.dequantize(), [out, inFeatures]);
        const x = random([m, inFeatures]);
        const bias = random([out]);
        const a = random([3, inFeatures], 0.1);
        const b = random([out, 3], 0.1);
        const weighting = random([m, out]);
        const withLora = (w: { frozen: typeof frozen } | { weight: tf.Tensor2D }) => (xs: tf.Tensor, as: tf.Tensor, bs: tf.Tensor) =>
          linear(xs as tf.Tensor2D, w, bias, { input: xs as tf.Tensor2D, a: as as tf.Tensor2D, b: bs as tf.Tensor2D, scale: 2 });
        assertSame(valueAndGradients(withLora({ frozen }), [x, a, b], weighting), valueAndGradients(withLora({ weight }), [x, a, b], weighting), 1e-4);
        const plain = (w: { frozen: typeof frozen } | { weight: tf.Tensor2D }) => (xs: tf.Tensor) => linear(xs as tf.Tensor2D, w, undefined);
        assertSame(valueAndGradients(plain({ frozen }), [x], weighting), valueAndGradients(plain({ weight }), [x], weighting), 1e-4);
        frozen.dispose();
        tf.dispose([weight, x, bias, a, b, weighting]);
      });
    }
  }

  it("refuses a disposed weight and bytes that do not match the shape", () => {
    const weight = createFrozenLinear(f32Bytes(normals(8)), "F32", [2, 4], "int8");
    weight.dispose();
    assert.throws(() => weight.dequantize(), /frozenDequantize/);
    assert.throws(() => createFrozenLinear(f32Bytes(normals(8)), "F32", [3, 4], "nf4"), /do not match/);
  });
});
