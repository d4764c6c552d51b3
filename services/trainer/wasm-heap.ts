// The wasm backend keeps every tensor in one WebAssembly memory, which wasm32 caps at 4 GiB (the
// tfjs-backend-wasm modules declare 65536 pages of 64 KiB as their maximum; the threaded one's glue
// creates its shared memory with the same). A model that does not
// fit used to end deep inside a kernel with "RuntimeError: memory access out of bounds"; these checks
// refuse it before anything is allocated, and turn any late failure into a message that says so.
import * as tf from "@tensorflow/tfjs";
import { TrainingConfigError } from "./settings.ts";

export const WASM32_MAX_BYTES = 4 * 1024 ** 3;
/** The module's own data and stack: its initial memory (256 pages). */
export const WASM_STATIC_BYTES = 16 * 1024 ** 2;

export class WasmHeapError extends TrainingConfigError {
  constructor(message: string) {
    super(message);
    this.name = "WasmHeapError";
  }
}

export function formatBytes(bytes: number): string {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** Room left in a wasm32 heap that holds `usedBytes` of tensors. */
export function wasmHeapRoom(usedBytes: number): number {
  return Math.max(0, WASM32_MAX_BYTES - WASM_STATIC_BYTES - usedBytes);
}

/** Room left in this thread's wasm heap, or undefined when the backend is not wasm (no such limit). */
export function wasmHeapLeft(): number | undefined {
  return tf.getBackend() === "wasm" ? wasmHeapRoom(tf.memory().numBytes) : undefined;
}

function refusal(what: string, needBytes: number, leftBytes: number): WasmHeapError {
  return new WasmHeapError(
    `${what} needs ${formatBytes(needBytes)} of wasm memory but the wasm heap has ${formatBytes(leftBytes)} left ` +
      `(wasm32 memory is limited to ${formatBytes(WASM32_MAX_BYTES)}): use the tensorflow backend, a smaller model, or a smaller batch or sequence length`,
  );
}

/** The refusal when `needBytes` more would not fit `leftBytes` of wasm heap (undefined: no wasm heap, no limit). */
export function wasmHeapRefusal(what: string, needBytes: number, leftBytes: number | undefined): WasmHeapError | undefined {
  return leftBytes !== undefined && needBytes > leftBytes ? refusal(what, needBytes, leftBytes) : undefined;
}

/** Throws WasmHeapError when `needBytes` more would not fit this thread's wasm heap; nothing on other backends. */
export function ensureWasmHeapRoom(what: string, needBytes: number): void {
  const refused = wasmHeapRefusal(what, needBytes, wasmHeapLeft());
  if (refused) throw refused;
}

/** The messages a wasm heap that ran out gives: a trap, emscripten's abort, or a refused grow. */
const OUT_OF_WASM_MEMORY = /memory access out of bounds|Aborted\(OOM\)|Cannot enlarge memory|Maximum memory size exceeded|WebAssembly\.Memory\(\): could not allocate|Out of memory/i;

export function isWasmOutOfMemory(error: unknown): boolean {
  return error instanceof Error && !(error instanceof WasmHeapError) && OUT_OF_WASM_MEMORY.test(error.message);
}

/** Runs `work`; a wasm out-of-memory failure in it is rethrown as WasmHeapError naming the need and the room. */
export async function withWasmHeapErrors<T>(what: string, needBytes: number, work: () => T | Promise<T>): Promise<T> {
  const left = wasmHeapLeft();
  try {
    return await work();
  } catch (error) {
    if (!isWasmOutOfMemory(error)) throw error;
    throw refusal(what, needBytes, left ?? wasmHeapRoom(0));
  }
}
