import assert from "node:assert/strict";
import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import {
  decodeRawTensor,
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  visitSafetensors,
  writeSafetensors,
  SafetensorsError,
  type NamedArray,
  type RawTensor,
} from "../../services/trainer/safetensors.ts";

const sample = (): Map<string, NamedArray> =>
  new Map([
    ["layer.weight", { shape: [2, 3], data: Float32Array.from([1, -2.5, 0.333333343, 65504, -0, 1e-3]) }],
    ["layer.bias", { shape: [3], data: Float32Array.from([0.1, 3.140625, -7]) }],
  ]);

test("F32 round trip is exact and the header follows the format", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "st-"));
  const file = path.join(dir, "m.safetensors");
  await writeSafetensors(file, sample());
  const bytes = await readFile(file);
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  assert.equal((8 + headerLength) % 8, 0, "tensor data is 8-byte aligned");
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8"));
  assert.deepEqual(header.__metadata__, { format: "pt" });
  assert.deepEqual(header["layer.bias"], { dtype: "F32", shape: [3], data_offsets: [0, 12] });
  assert.deepEqual(header["layer.weight"], { dtype: "F32", shape: [2, 3], data_offsets: [12, 36] });
  const back = await readSafetensors(file);
  for (const [name, value] of sample()) {
    assert.deepEqual(back.get(name)!.shape, value.shape);
    assert.deepEqual([...back.get(name)!.data], [...value.data]);
  }
});

test("F16 stores IEEE half precision with round-to-nearest-even", () => {
  const values = Float32Array.from([1, -2.5, 65504, 1 / 3, 1e-7, 2049, 2051, 0.1]);
  const back = parseSafetensors(serializeSafetensors(new Map([["x", { shape: [values.length], data: values }]]), "F16")).get("x")!.data;
  // Exact halves survive; 1/3 -> 0x3555 = 0.333251953125; 1e-7 -> subnormal 2^-24 * 2 = 1.1920928955078125e-7;
  // 2049 and 2051 are ties between representable neighbours and round to the even ones (2048, 2052).
  assert.deepEqual([...back], [1, -2.5, 65504, 0.333251953125, 1.1920928955078125e-7, 2048, 2052, 0.0999755859375]);
});

test("BF16 keeps the float32 exponent and rounds the mantissa to 7 bits, ties to even", () => {
  const values = Float32Array.from([1, -2.5, 1 / 3, 3e38, 1.00390625, 1.01171875]);
  const back = parseSafetensors(serializeSafetensors(new Map([["x", { shape: [values.length], data: values }]]), "BF16")).get("x")!.data;
  // 1/3 -> 0x3EAB = 0.333984375; 1 + 2^-8 ties down to 1, 1 + 3·2^-8 ties up to 1 + 2^-6.
  assert.equal(back[0], 1);
  assert.equal(back[1], -2.5);
  assert.equal(back[2], 0.333984375);
  assert.ok(Math.abs(back[3] - 3e38) / 3e38 < 2 ** -8);
  assert.equal(back[4], 1);
  assert.equal(back[5], 1.015625);
});

function rawFile(header: object, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const bytes = new Uint8Array(8 + json.length + data.length);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(json.length), true);
  bytes.set(json, 8);
  bytes.set(data, 8 + json.length);
  return bytes;
}

test("integer buffers (position_ids) are skipped and F64 is read; other dtypes and truncated files are rejected", () => {
  const f64 = new Uint8Array(new Float64Array([0.5, -3]).buffer);
  const parsed = parseSafetensors(rawFile({ ids: { dtype: "I64", shape: [1], data_offsets: [0, 8] }, w: { dtype: "F64", shape: [2], data_offsets: [8, 24] } }, new Uint8Array([...new Uint8Array(8), ...f64])));
  assert.deepEqual([...parsed.keys()], ["w"]);
  assert.deepEqual([...parsed.get("w")!.data], [0.5, -3]);
  const fp8 = rawFile({ x: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }, new Uint8Array(1));
  assert.throws(() => parseSafetensors(fp8), (error: Error) => error instanceof SafetensorsError && /F8_E4M3/.test(error.message));
  assert.throws(() => parseSafetensors(fp8.subarray(0, 5)), SafetensorsError);
  const short = rawFile({ x: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
  assert.throws(() => parseSafetensors(short), /offsets/);
});

test("a file is visited tensor by tensor, each with its own stored bytes; a file cut inside a tensor's data is refused", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "st-"));
  const file = path.join(dir, "m.safetensors");
  await writeFile(file, serializeSafetensors(sample(), "BF16"));
  const visited: RawTensor[] = [];
  await visitSafetensors(file, (tensor) => visited.push(tensor));
  assert.deepEqual(visited.map((t) => [t.name, t.dtype, t.shape, t.bytes.byteLength]), [["layer.bias", "BF16", [3], 6], ["layer.weight", "BF16", [2, 3], 12]]);
  assert.notEqual(visited[0].bytes.buffer, visited[1].bytes.buffer, "each tensor has a buffer of its own");
  assert.deepEqual([...decodeRawTensor(visited[0]).data], [...parseSafetensors(await readFile(file)).get("layer.bias")!.data]);
  const whole = await readFile(file);
  await writeFile(file, whole.subarray(0, whole.byteLength - 4));
  await assert.rejects(visitSafetensors(file, () => {}), SafetensorsError);
});
