// Kernels the trainer needs from tfjs's wasm backend that tfjs ships missing or wasteful; pure
// JS on the wasm heap, so plain wasm and wasm-blas both get them.
import * as tf from "@tensorflow/tfjs";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

/**
 * tfjs saves every tensor a gradient needs through `clone`, i.e. the Identity kernel, and the
 * wasm backend's Identity copies the whole tensor. Tensors are immutable and the wasm backend
 * counts references per buffer (its Reshape already shares), so Identity shares the buffer too,
 * as the cpu backend does: a training step keeps one copy of each saved activation, not two.
 */
function sharedIdentity(copying: tf.KernelFunc): tf.KernelFunc {
  return (({ inputs, backend }: KernelArgs) => {
    const x = inputs.x!;
    if (x.dtype === "string") return copying({ inputs, backend, attrs: {} });
    (backend as BackendWasm).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  }) as tf.KernelFunc;
}

/**
 * UnsortedSegmentSum, which the gradient of a gather (an embedding lookup) needs and the wasm
 * backend lacks: out[segmentIds[i]] += x[i] over the leading axis; ids outside [0, numSegments) are dropped.
 */
function unsortedSegmentSum({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const wasm = backend as BackendWasm;
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = attrs!.numSegments as number;
  const outShape = [numSegments, ...x.shape.slice(1)];
  const out = wasm.makeOutput(outShape, x.dtype);
  const rowSize = tf.util.sizeFromShape(x.shape.slice(1));
  const values = wasm.typedArrayFromHeap(x);
  const ids = wasm.typedArrayFromHeap(segmentIds);
  const sums = wasm.typedArrayFromHeap(out);
  sums.fill(0);
  for (let row = 0; row < ids.length; row++) {
    const segment = ids[row];
    if (segment < 0 || segment >= numSegments) continue;
    const from = row * rowSize;
    const to = segment * rowSize;
    for (let j = 0; j < rowSize; j++) sums[to + j] += values[from + j];
  }
  return out;
}

export function registerWasmKernels(): void {
  const identity = tf.getKernel("Identity", "wasm").kernelFunc;
  tf.unregisterKernel("Identity", "wasm");
  tf.registerKernel({ kernelName: "Identity", backendName: "wasm", kernelFunc: sharedIdentity(identity) });
  if (!tf.getKernel("UnsortedSegmentSum", "wasm")) {
    tf.registerKernel({ kernelName: "UnsortedSegmentSum", backendName: "wasm", kernelFunc: unsortedSegmentSum as tf.KernelFunc });
  }
}
