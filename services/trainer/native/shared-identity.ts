// tfjs saves every tensor a gradient needs through `clone`, i.e. the Identity kernel, and the
// wasm backend's Identity copies the whole tensor. Tensors are immutable and the wasm backend
// counts references per buffer (its Reshape already shares), so Identity can share the buffer
// too, as the cpu backend does: a training step then keeps one copy of each saved activation
// instead of two, and skips the copies.
import * as tf from "@tensorflow/tfjs";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";

export function registerSharedIdentity(): void {
  const copying = tf.getKernel("Identity", "wasm");
  const shareIdentity = ({ inputs, backend }: { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend }) => {
    const x = inputs.x!;
    if (x.dtype === "string") return copying.kernelFunc({ inputs, backend, attrs: {} });
    (backend as BackendWasm).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  };
  tf.unregisterKernel("Identity", "wasm");
  tf.registerKernel({ kernelName: "Identity", backendName: "wasm", kernelFunc: shareIdentity as tf.KernelFunc });
}
