// Loads the OpenBLAS addon (built by scripts/build-native.sh) and routes the wasm backend's
// matrix products to it. The addon reads and writes the wasm heap in place, so a product costs
// one sgemm call and no copies; everything else stays on tfjs's own wasm kernels.
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";
import { registerFusedKernels, type FusedKernelAddon } from "./fused-kernels.ts";
import { registerFrozenKernels, type FrozenLinearAddon } from "./frozen-linear.ts";

interface BlasAddon extends Partial<FusedKernelAddon>, Partial<FrozenLinearAddon> {
  /** out[i] = op(a[aIndex[i]]) · op(b[bIndex[i]]), a holding m×k (k×m transposed), b k×n (n×k). */
  matmul(
    a: Float32Array,
    b: Float32Array,
    out: Float32Array,
    aIndex: Int32Array,
    bIndex: Int32Array,
    m: number,
    n: number,
    k: number,
    transposeA: boolean,
    transposeB: boolean,
  ): void;
  /** Adds bias (length n) to each row of n values of out, then clamps at zero when relu is set. */
  biasActivation(out: Float32Array, bias: Float32Array, relu: boolean): void;
  geluForward(x: Float32Array, out: Float32Array): void;
  geluBackward(x: Float32Array, dy: Float32Array, out: Float32Array): void;
  threads(): number;
}

/**
 * Kernels this addon adds to the wasm backend beyond tfjs's own: GELU (erf form) and its
 * gradient, one vectorised pass each instead of tfjs's chain of Erf, Exp and Multiply passes.
 * Callers use them when the active backend has them registered.
 */
export const GELU_KERNEL = "TrainerGelu";
export const GELU_GRAD_KERNEL = "TrainerGeluGrad";

/** Where the addon is looked for unless the entry point names another build (TRAINER_BLAS_ADDON; a missing file means no addon). */
export const defaultAddonPath = fileURLToPath(new URL("./build/Release/blas.node", import.meta.url));

const require = createRequire(import.meta.url);

export type AddonLoad = { ok: true; addon: BlasAddon; path: string } | { ok: false; path: string; reason: string };

export function loadBlasAddon(addonPath = defaultAddonPath): AddonLoad {
  try {
    return { ok: true, addon: require(addonPath) as BlasAddon, path: addonPath };
  } catch (error) {
    const reason = String(error instanceof Error ? error.message : error).split("\n")[0];
    return { ok: false, path: addonPath, reason };
  }
}

interface Product {
  m: number;
  n: number;
  k: number;
  aIndex: Int32Array;
  bIndex: Int32Array;
  outShape: number[];
}

/**
 * Works out the sgemm calls of a (possibly batched, broadcast) product. The output batch i reads
 * the batch of each operand that broadcasting maps it to, so [2,1,m,k]·[1,3,k,n] is right too.
 */
function planProduct(aShape: number[], bShape: number[], transposeA: boolean, transposeB: boolean): Product {
  const aRank = aShape.length;
  const bRank = bShape.length;
  const k = transposeA ? aShape[aRank - 2] : aShape[aRank - 1];
  const kB = transposeB ? bShape[bRank - 1] : bShape[bRank - 2];
  if (k !== kB) {
    throw new Error(`matMul: inner dimensions ${k} and ${kB} of shapes [${aShape}] and [${bShape}] differ`);
  }
  const m = transposeA ? aShape[aRank - 1] : aShape[aRank - 2];
  const n = transposeB ? bShape[bRank - 2] : bShape[bRank - 1];
  const aOuter = aShape.slice(0, -2);
  const bOuter = bShape.slice(0, -2);
  const outOuter = tf.broadcast_util.assertAndGetBroadcastShape(aOuter, bOuter);
  const outShape = [...outOuter, m, n];
  const batch = tf.util.sizeFromShape(outOuter);
  const bBatches = tf.util.sizeFromShape(bOuter);
  if (bBatches === 1 && !transposeA) {
    // a's batches are contiguous m×k blocks: one product of (batch·m)×k by k×n.
    return { m: m * batch, n, k, aIndex: new Int32Array(1), bIndex: new Int32Array(1), outShape };
  }
  return { m, n, k, aIndex: batchIndex(aOuter, outOuter, batch), bIndex: batchIndex(bOuter, outOuter, batch), outShape };
}

/** For each output batch (row-major over outOuter), the flat batch of an operand with outer dims `outer`. */
function batchIndex(outer: number[], outOuter: number[], batch: number): Int32Array {
  const index = new Int32Array(batch);
  const lead = outOuter.length - outer.length;
  for (let i = 0; i < batch; i++) {
    let rest = i;
    let flat = 0;
    let stride = 1;
    for (let d = outOuter.length - 1; d >= 0; d--) {
      const coordinate = rest % outOuter[d];
      rest = Math.floor(rest / outOuter[d]);
      if (d < lead) continue;
      const size = outer[d - lead];
      flat += (size === 1 ? 0 : coordinate) * stride;
      stride *= size;
    }
    index[i] = flat;
  }
  return index;
}

function runProduct(
  addon: BlasAddon,
  backend: BackendWasm,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transposeA: boolean,
  transposeB: boolean,
): tf.TensorInfo {
  if (a.dtype !== "float32" || b.dtype !== "float32") {
    throw new Error(`matMul on the BLAS path needs float32 tensors, got ${a.dtype} and ${b.dtype}`);
  }
  const plan = planProduct(a.shape, b.shape, transposeA, transposeB);
  const out = backend.makeOutput(plan.outShape, "float32");
  // Views are taken after the output is allocated: allocation may grow (and move) the heap.
  addon.matmul(
    backend.typedArrayFromHeap(a) as Float32Array,
    backend.typedArrayFromHeap(b) as Float32Array,
    backend.typedArrayFromHeap(out) as Float32Array,
    plan.aIndex,
    plan.bIndex,
    plan.m,
    plan.n,
    plan.k,
    transposeA,
    transposeB,
  );
  return out;
}

const activationKernels: Record<string, string> = {
  relu: "Relu",
  relu6: "Relu6",
  elu: "Elu",
  sigmoid: "Sigmoid",
  leakyrelu: "LeakyRelu",
  prelu: "Prelu",
};

function runWasmKernel(name: string, inputs: tf.NamedTensorInfoMap, backend: BackendWasm, attrs: tf.NamedAttrMap = {}): tf.TensorInfo {
  return tf.getKernel(name, "wasm").kernelFunc({ inputs, backend, attrs }) as tf.TensorInfo;
}

/** Frees an intermediate result that `next` was computed from. */
function replaceWith(backend: BackendWasm, previous: tf.TensorInfo, next: tf.TensorInfo): tf.TensorInfo {
  backend.disposeData(previous.dataId);
  return next;
}

/** Set while the addon's products are registered on the wasm backend (a wrapper, such as a profiler's timer, keeps it). */
let blasRegistered = false;

/** Whether the active backend's matrix products run on the addon (transposed forms then cost nothing extra). */
export function blasProductsActive(): boolean {
  return blasRegistered && tf.getBackend() === "wasm";
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

/**
 * Registers BatchMatMul and _FusedMatMul of the wasm backend on the addon, the GELU kernels and the
 * fused training kernels (fused-kernels.ts) and the frozen-linear ones (frozen-linear.ts).
 * Bias and activation of the fused kernel run in the addon for a row bias with linear or relu
 * (what dense layers use), otherwise on tfjs's elementwise wasm kernels: tfjs's own fused wasm
 * kernel gets elu, and a transposed B with a bias, wrong. Returns a function that puts tfjs's
 * own kernels back (tests compare both in one process).
 */
export function registerBlasKernels(addon: BlasAddon): () => void {
  const originals = [tf.getKernel("BatchMatMul", "wasm"), tf.getKernel("_FusedMatMul", "wasm")];

  const batchMatMul = ({ inputs, backend, attrs }: KernelArgs) => {
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    return runProduct(addon, backend as BackendWasm, inputs.a!, inputs.b!, transposeA, transposeB);
  };

  const fusedMatMul = ({ inputs, backend, attrs }: KernelArgs) => {
    const { transposeA, transposeB, activation, leakyreluAlpha } = attrs as {
      transposeA: boolean;
      transposeB: boolean;
      activation: string;
      leakyreluAlpha?: number;
    };
    const wasm = backend as BackendWasm;
    const { bias, preluActivationWeights } = inputs;
    let out = runProduct(addon, wasm, inputs.a!, inputs.b!, transposeA, transposeB);
    const n = out.shape[out.shape.length - 1];
    const rowBias = bias == null || (tf.util.sizeFromShape(bias.shape) === n && bias.shape.slice(0, -1).every((d) => d === 1));
    const reluFused = rowBias && activation === "relu";
    if (rowBias && (bias != null || reluFused) && n > 0) {
      const biasValues = bias == null ? new Float32Array(n) : (wasm.typedArrayFromHeap(bias) as Float32Array);
      addon.biasActivation(wasm.typedArrayFromHeap(out) as Float32Array, biasValues, reluFused);
    } else if (bias != null) {
      out = replaceWith(wasm, out, runWasmKernel("Add", { a: out, b: bias }, wasm));
    }
    if (reluFused || activation === "linear") return out;
    const activationKernel = activationKernels[activation];
    if (activationKernel == null) throw new Error(`_FusedMatMul: unknown activation ${activation}`);
    const activationInputs = activation === "prelu" ? { x: out, alpha: preluActivationWeights! } : { x: out };
    return replaceWith(wasm, out, runWasmKernel(activationKernel, activationInputs, wasm, { alpha: leakyreluAlpha ?? 0.2 }));
  };

  const elementwise = (compute: (inputs: Float32Array[], out: Float32Array) => void, names: string[]) =>
    (({ inputs, backend }: KernelArgs) => {
      const wasm = backend as BackendWasm;
      const first = inputs[names[0]]!;
      const out = wasm.makeOutput(first.shape, "float32");
      compute(names.map((name) => wasm.typedArrayFromHeap(inputs[name]!) as Float32Array), wasm.typedArrayFromHeap(out) as Float32Array);
      return out;
    }) as tf.KernelFunc;
  tf.registerKernel({ kernelName: GELU_KERNEL, backendName: "wasm", kernelFunc: elementwise(([x], out) => addon.geluForward(x, out), ["x"]) });
  tf.registerKernel({ kernelName: GELU_GRAD_KERNEL, backendName: "wasm", kernelFunc: elementwise(([x, dy], out) => addon.geluBackward(x, dy, out), ["x", "dy"]) });

  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel({ kernelName: "BatchMatMul", backendName: "wasm", kernelFunc: batchMatMul as tf.KernelFunc });
  blasRegistered = true;
  tf.unregisterKernel("_FusedMatMul", "wasm");
  tf.registerKernel({ kernelName: "_FusedMatMul", backendName: "wasm", kernelFunc: fusedMatMul as tf.KernelFunc });
  // An addon built before the fused kernels existed has matrix products only.
  const removeFused = typeof addon.attentionForward === "function" ? registerFusedKernels(addon as FusedKernelAddon) : () => {};
  const removeFrozen = typeof addon.frozenMatmul === "function" ? registerFrozenKernels(addon as FrozenLinearAddon) : () => {};

  return () => {
    blasRegistered = false;
    removeFused();
    removeFrozen();
    tf.unregisterKernel(GELU_KERNEL, "wasm");
    tf.unregisterKernel(GELU_GRAD_KERNEL, "wasm");
    for (const config of originals) {
      tf.unregisterKernel(config.kernelName, "wasm");
      tf.registerKernel(config);
    }
  };
}
