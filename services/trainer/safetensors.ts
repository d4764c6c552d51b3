// safetensors: 8-byte little-endian header length, JSON header, raw little-endian tensor bytes.
import { open, writeFile } from "node:fs/promises";

export type StoredDtype = "F32" | "F16" | "BF16";

export interface NamedArray {
  shape: number[];
  data: Float32Array;
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

const BYTES_PER_ELEMENT: Record<StoredDtype | "F64", number> = { F32: 4, F16: 2, BF16: 2, F64: 8 };
/** Integer tensors in checkpoints are buffers (e.g. embeddings.position_ids), not weights: they are skipped. */
const INTEGER_DTYPES = new Set(["I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8", "BOOL"]);

function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

const scratch = new DataView(new ArrayBuffer(4));

/** float32 -> IEEE half, rounding to nearest even (as torch's .half() does). */
function floatToHalf(value: number): number {
  scratch.setFloat32(0, value, true);
  const bits = scratch.getUint32(0, true);
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    let half = mantissa >>> shift;
    const remainder = mantissa & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (remainder > halfway || (remainder === halfway && half & 1)) half += 1;
    return sign | half;
  }
  let half = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  if (remainder > 0x1000 || (remainder === 0x1000 && half & 1)) half += 1;
  return sign | half;
}

/** float32 -> bfloat16 bits, rounding to nearest even. */
function floatToBf16(value: number): number {
  scratch.setFloat32(0, value, true);
  const bits = scratch.getUint32(0, true);
  if ((bits & 0x7fffffff) > 0x7f800000) return (bits >>> 16) | 0x40;
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** One tensor's header entry: dtype, shape and byte range relative to the data section. */
interface HeaderEntry {
  name: string;
  dtype: StoredDtype | "F64";
  shape: number[];
  begin: number;
  end: number;
}

/** The float tensors a header lists (integer buffers skipped), checked against the data section's size. */
function headerEntries(header: Record<string, unknown>, dataBytes: number): HeaderEntry[] {
  const entries: HeaderEntry[] = [];
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const { dtype, shape, data_offsets: offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    if (INTEGER_DTYPES.has(dtype)) continue;
    if (!(dtype in BYTES_PER_ELEMENT)) throw new SafetensorsError(`tensor ${name}: dtype ${dtype} is not supported (F32, F16, BF16, F64)`);
    const count = shape.reduce((a, b) => a * b, 1);
    if (offsets[1] - offsets[0] !== count * BYTES_PER_ELEMENT[dtype as StoredDtype] || offsets[1] > dataBytes) {
      throw new SafetensorsError(`tensor ${name}: data offsets do not match its shape`);
    }
    entries.push({ name, dtype: dtype as StoredDtype | "F64", shape, begin: offsets[0], end: offsets[1] });
  }
  return entries;
}

/** A tensor's little-endian bytes as float32 values. */
function decodeTensor(dtype: StoredDtype | "F64", bytes: Uint8Array): Float32Array {
  if (dtype === "F32") {
    // Fast path: a copy of the bytes viewed as float32 (safetensors data is little-endian, as is every host we run on).
    return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const count = bytes.byteLength / BYTES_PER_ELEMENT[dtype];
  const data = new Float32Array(count);
  if (dtype === "F64") {
    for (let i = 0; i < count; i++) data[i] = view.getFloat64(8 * i, true);
  } else if (dtype === "F16") {
    for (let i = 0; i < count; i++) data[i] = halfToFloat(view.getUint16(2 * i, true));
  } else {
    for (let i = 0; i < count; i++) {
      scratch.setUint32(0, view.getUint16(2 * i, true) << 16, true);
      data[i] = scratch.getFloat32(0, true);
    }
  }
  return data;
}

export function parseSafetensors(buffer: Uint8Array): Map<string, NamedArray> {
  if (buffer.byteLength < 8) throw new SafetensorsError("file too short for a safetensors header");
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (8 + headerLength > buffer.byteLength) throw new SafetensorsError("header length exceeds file size");
  const header = JSON.parse(new TextDecoder().decode(buffer.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  const dataStart = 8 + headerLength;
  const tensors = new Map<string, NamedArray>();
  for (const { name, dtype, shape, begin, end } of headerEntries(header, buffer.byteLength - dataStart)) {
    tensors.set(name, { shape, data: decodeTensor(dtype, buffer.subarray(dataStart + begin, dataStart + end)) });
  }
  return tensors;
}

/** A tensor as stored: its dtype and raw little-endian bytes (a buffer of its own, which a visitor may keep). */
export interface RawTensor {
  name: string;
  dtype: StoredDtype | "F64";
  shape: number[];
  bytes: Uint8Array;
}

/**
 * Visits a file's float tensors one at a time, reading each one's byte range only: loading never
 * holds more than one tensor's bytes, whatever the file's size. `visit` decides what to keep.
 */
export async function visitSafetensors(file: string, visit: (tensor: RawTensor) => void): Promise<void> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const prefix = Buffer.alloc(8);
    if (size < 8 || (await handle.read(prefix, 0, 8, 0)).bytesRead < 8) throw new SafetensorsError("file too short for a safetensors header");
    const headerLength = Number(prefix.readBigUInt64LE(0));
    if (8 + headerLength > size) throw new SafetensorsError("header length exceeds file size");
    const headerBytes = Buffer.alloc(headerLength);
    await handle.read(headerBytes, 0, headerLength, 8);
    const header = JSON.parse(headerBytes.toString("utf8")) as Record<string, unknown>;
    const dataStart = 8 + headerLength;
    for (const entry of headerEntries(header, size - dataStart)) {
      const bytes = new Uint8Array(entry.end - entry.begin);
      for (let done = 0; done < bytes.byteLength; ) {
        const { bytesRead } = await handle.read(bytes, done, bytes.byteLength - done, dataStart + entry.begin + done);
        if (bytesRead === 0) throw new SafetensorsError(`tensor ${entry.name}: file ends inside its data`);
        done += bytesRead;
      }
      visit({ name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes });
    }
  } finally {
    await handle.close();
  }
}

/** A raw tensor's values as float32; F32 bytes are viewed in place, not copied. */
export function decodeRawTensor({ shape, dtype, bytes }: RawTensor): NamedArray {
  if (dtype === "F32" && bytes.byteOffset % 4 === 0) return { shape, data: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4) };
  return { shape, data: decodeTensor(dtype, bytes) };
}

export function serializeSafetensors(tensors: Map<string, NamedArray>, dtype: StoredDtype = "F32", metadata: Record<string, string> = { format: "pt" }): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: metadata };
  const names = [...tensors.keys()].sort();
  let offset = 0;
  for (const name of names) {
    const tensor = tensors.get(name)!;
    const size = tensor.data.length * BYTES_PER_ELEMENT[dtype];
    header[name] = { dtype, shape: tensor.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  const json = JSON.stringify(header);
  // Pad the header with spaces so tensor data starts 8-byte aligned, as the reference writer does.
  const padding = (8 - (Buffer.byteLength(json) % 8)) % 8;
  const headerBytes = new TextEncoder().encode(json + " ".repeat(padding));
  const out = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let position = 8 + headerBytes.length;
  for (const name of names) {
    const { data } = tensors.get(name)!;
    for (let i = 0; i < data.length; i++) {
      if (dtype === "F32") view.setFloat32(position + 4 * i, data[i], true);
      else view.setUint16(position + 2 * i, dtype === "F16" ? floatToHalf(data[i]) : floatToBf16(data[i]), true);
    }
    position += data.length * BYTES_PER_ELEMENT[dtype];
  }
  return out;
}

export async function readSafetensors(file: string): Promise<Map<string, NamedArray>> {
  const tensors = new Map<string, NamedArray>();
  await visitSafetensors(file, (raw) => tensors.set(raw.name, decodeRawTensor(raw)));
  return tensors;
}

/** How many numbers a safetensors file holds, from its header alone (the tensor bytes are not read). */
export async function safetensorsElementCount(file: string): Promise<number> {
  const handle = await open(file, "r");
  try {
    const lengthBytes = Buffer.alloc(8);
    await handle.read(lengthBytes, 0, 8, 0);
    const headerLength = Number(lengthBytes.readBigUInt64LE(0));
    const headerBytes = Buffer.alloc(headerLength);
    await handle.read(headerBytes, 0, headerLength, 8);
    const header = JSON.parse(headerBytes.toString("utf8")) as Record<string, { shape?: number[] }>;
    return Object.entries(header)
      .filter(([name]) => name !== "__metadata__")
      .reduce((total, [, entry]) => total + (entry.shape ?? []).reduce((a, b) => a * b, 1), 0);
  } finally {
    await handle.close();
  }
}

export async function writeSafetensors(file: string, tensors: Map<string, NamedArray>, dtype: StoredDtype = "F32"): Promise<void> {
  await writeFile(file, serializeSafetensors(tensors, dtype));
}
