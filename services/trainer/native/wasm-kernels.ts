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

/**
 * GatherV2 along the first axis (an embedding lookup) as one row copy per index; tfjs's wasm
 * kernel takes tens of milliseconds for 1,024 rows of a vocabulary table. Other forms go to it.
 */
function rowGather(general: tf.KernelFunc): tf.KernelFunc {
  return ((args: KernelArgs) => {
    const { inputs, backend, attrs } = args;
    const { x, indices } = inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
    const axis = tf.util.parseAxisParam(attrs!.axis as number, x.shape)[0];
    if (axis !== 0 || (attrs!.batchDims as number) !== 0 || x.dtype === "string") return general(args);
    const wasm = backend as BackendWasm;
    const rows = x.shape[0];
    const rowSize = tf.util.sizeFromShape(x.shape.slice(1));
    const out = wasm.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
    const table = wasm.typedArrayFromHeap(x);
    const ids = wasm.typedArrayFromHeap(indices);
    const values = wasm.typedArrayFromHeap(out);
    for (let i = 0; i < ids.length; i++) {
      const row = ids[i];
      if (!(row >= 0 && row < rows)) {
        wasm.disposeData(out.dataId);
        throw new Error(`GatherV2: index ${row} is not in [0, ${rows})`);
      }
      values.set(table.subarray(row * rowSize, (row + 1) * rowSize), i * rowSize);
    }
    return out;
  }) as tf.KernelFunc;
}

export function registerWasmKernels(): void {
  const gather = tf.getKernel("GatherV2", "wasm").kernelFunc;
  tf.unregisterKernel("GatherV2", "wasm");
  tf.registerKernel({ kernelName: "GatherV2", backendName: "wasm", kernelFunc: rowGather(gather) });
  const identity = tf.getKernel("Identity", "wasm").kernelFunc;
  tf.unregisterKernel("Identity", "wasm");
  tf.registerKernel({ kernelName: "Identity", backendName: "wasm", kernelFunc: sharedIdentity(identity) });
  if (!tf.getKernel("UnsortedSegmentSum", "wasm")) {
    tf.registerKernel({ kernelName: "UnsortedSegmentSum", backendName: "wasm", kernelFunc: unsortedSegmentSum as tf.KernelFunc });
  }
}
