// Frozen linear weights stored by the addon outside the wasm heap (quant.c), in the checkpoint's own
// dtype or quantized, and the two kernels that use them: y = x·Wᵀ and dx = dy·W, each dequantizing
// a tile at a time into a BLAS call (quant-matmul.c). The wasm heap then holds activations, LoRA and
// the optimizer state only.
import * as tf from "@tensorflow/tfjs";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";

import type { Quantization } from "../settings.ts";

export type SourceDtype = "F32" | "BF16" | "F16";

type Handle = object;

export interface FrozenLinearAddon {
  frozenCreate(bytes: Uint8Array, sourceDtype: number, rows: number, cols: number, mode: number, doubleQuant: boolean): Handle;
  frozenRelease(handle: Handle): void;
  frozenBytes(handle: Handle): number;
  frozenDequantize(handle: Handle, out: Float32Array): void;
  frozenMatmul(handle: Handle, input: Float32Array, out: Float32Array, m: number, transposed: boolean): void;
}

const SOURCE_CODE: Record<SourceDtype, number> = { F32: 0, BF16: 1, F16: 2 };
const MODE_CODE: Record<Quantization, number> = { none: 0, int8: 3, nf4: 4 };

export const FROZEN_LINEAR_KERNEL = "TrainerFrozenLinear";
export const FROZEN_LINEAR_GRAD_KERNEL = "TrainerFrozenLinearGrad";

/** Quantized storage was asked for where the addon cannot hold it. */
export class FrozenStorageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FrozenStorageError";
  }
}

let active: FrozenLinearAddon | undefined;
const live = new Map<number, FrozenLinear>();
let nextId = 1;

/** A linear layer's weight W [outFeatures, inFeatures] held by the addon. */
export class FrozenLinear {
  readonly id = nextId++;
  private released = false;

  constructor(
    private readonly addon: FrozenLinearAddon,
    private readonly handle: Handle,
    readonly outFeatures: number,
    readonly inFeatures: number,
    /** The storage: the source dtype kept ("F32", "BF16", "F16") or "int8" / "nf4". */
    readonly storage: SourceDtype | "int8" | "nf4",
  ) {
    live.set(this.id, this);
  }

  /** Bytes the stored weight takes outside the wasm heap. */
  get bytes(): number {
    return this.addon.frozenBytes(this.handle);
  }

  /** W as floats [out, in] (merging and tests; training never makes this copy). */
  dequantize(): Float32Array {
    const out = new Float32Array(this.outFeatures * this.inFeatures);
    this.addon.frozenDequantize(this.handle, out);
    return out;
  }

  /** out = input·Wᵀ ([m, in] → [m, out]), or input·W when transposed ([m, out] → [m, in]). */
  matmul(input: Float32Array, out: Float32Array, m: number, transposed: boolean): void {
    this.addon.frozenMatmul(this.handle, input, out, m, transposed);
  }

  dispose(): void {
    if (this.released) return;
    this.released = true;
    live.delete(this.id);
    this.addon.frozenRelease(this.handle);
  }
}

/** Whether frozen weights can live in the addon (it is loaded and its products are registered). */
export function frozenStorageAvailable(): boolean {
  return active !== undefined && tf.getBackend() === "wasm";
}

/** The addon, or a FrozenStorageError saying why `quantization` cannot be had here. */
export function requireFrozenStorage(quantization: Quantization): FrozenLinearAddon {
  if (!active || !frozenStorageAvailable()) {
    throw new FrozenStorageError(`lora.quantization "${quantization}" needs the native BLAS addon on the wasm backend (run scripts/build-native.sh)`);
  }
  return active;
}

/**
 * A stored [rows, cols] weight (little-endian bytes of `dtype`) as a frozen linear in the given mode;
 * the bytes are read during the call only, so a loader can reuse or drop them at once.
 */
export function createFrozenLinear(bytes: Uint8Array, dtype: SourceDtype, [rows, cols]: number[], quantization: Quantization, doubleQuant = false): FrozenLinear {
  const addon = requireFrozenStorage(quantization);
  const handle = addon.frozenCreate(bytes, SOURCE_CODE[dtype], rows, cols, MODE_CODE[quantization], doubleQuant);
  return new FrozenLinear(addon, handle, rows, cols, quantization === "none" ? dtype : quantization);
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

function frozenKernel(transposed: boolean): tf.KernelFunc {
  return (({ inputs, backend, attrs }: KernelArgs) => {
    const wasm = backend as BackendWasm;
    const x = inputs.x!;
    const weight = live.get((attrs as { id: number }).id);
    if (!weight) throw new Error("frozen linear: the weight was disposed");
    const m = x.shape[0];
    const out = wasm.makeOutput([m, transposed ? weight.inFeatures : weight.outFeatures], "float32");
    // Views after the output is allocated: allocation may grow (and move) the heap.
    weight.matmul(wasm.typedArrayFromHeap(x) as Float32Array, wasm.typedArrayFromHeap(out) as Float32Array, m, transposed);
    return out;
  }) as tf.KernelFunc;
}

/** Registers the frozen-linear kernels on the wasm backend; returns their removal. */
export function registerFrozenKernels(addon: FrozenLinearAddon): () => void {
  active = addon;
  tf.registerKernel({ kernelName: FROZEN_LINEAR_KERNEL, backendName: "wasm", kernelFunc: frozenKernel(false) });
  tf.registerKernel({ kernelName: FROZEN_LINEAR_GRAD_KERNEL, backendName: "wasm", kernelFunc: frozenKernel(true) });
  return () => {
    active = undefined;
    tf.unregisterKernel(FROZEN_LINEAR_KERNEL, "wasm");
    tf.unregisterKernel(FROZEN_LINEAR_GRAD_KERNEL, "wasm");
  };
}

/** x [m, in] · Wᵀ → [m, out] on the addon. */
export function frozenProduct(x: tf.Tensor2D, weight: FrozenLinear): tf.Tensor2D {
  return tf.engine().runKernel(FROZEN_LINEAR_KERNEL, { x }, { id: weight.id }) as tf.Tensor2D;
}

/** dy [m, out] · W → [m, in] on the addon. */
export function frozenInputGrad(dy: tf.Tensor2D, weight: FrozenLinear): tf.Tensor2D {
  return tf.engine().runKernel(FROZEN_LINEAR_GRAD_KERNEL, { x: dy }, { id: weight.id }) as tf.Tensor2D;
}
