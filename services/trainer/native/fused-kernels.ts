// The addon's fused training kernels (attention.c, norms.c) as tfjs wasm kernels: attention with its
// heads read and written by strides, layer norm, RMSNorm, softmax cross-entropy, tanh GELU and SwiGLU's
// silu(gate)·up, each with its backward. Each replaces a chain of whole-tensor wasm passes (and their
// saved intermediates) by one call on the wasm heap. The model code (layers/fused.ts, losses.ts) uses
// them when the active backend has them registered and falls back to plain tfjs ops otherwise.
import * as tf from "@tensorflow/tfjs";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";

type F32 = Float32Array;
type Maybe = Float32Array | null;

/** The addon functions these kernels call (see attention.c and norms.c for their contracts). */
export interface FusedKernelAddon {
  attentionForward(
    q: F32, k: F32, v: F32, offsets: Int32Array, rowStride: number, batch: number, heads: number, length: number, headSize: number,
    scale: number, causal: boolean, keyMaskAdd: Maybe, keep: Maybe, probs: F32, context: F32,
  ): void;
  attentionBackward(
    q: F32, k: F32, v: F32, offsets: Int32Array, rowStride: number, batch: number, heads: number, length: number, headSize: number,
    scale: number, probs: F32, keep: Maybe, dContext: F32, dq: F32, dk: F32, dv: F32, outOffsets: Int32Array, outStride: number, causal: boolean,
  ): void;
  layerNormForward(x: F32, gamma: F32, beta: F32, epsilon: number, y: F32, mean: F32, rstd: F32): void;
  layerNormBackward(dy: F32, x: F32, gamma: F32, mean: F32, rstd: F32, dx: F32, dgamma: Maybe, dbeta: Maybe): void;
  rmsNormForward(x: F32, weight: F32, epsilon: number, y: F32, rstd: F32): void;
  rmsNormBackward(dy: F32, x: F32, weight: F32, rstd: F32, dx: F32, dweight: Maybe): void;
  softmaxCrossEntropy(logits: F32, labels: Int32Array, nll: F32): void;
  softmaxCrossEntropyBackward(logits: F32, labels: Int32Array, dNll: F32, dLogits: F32): void;
  geluTanhForward(x: F32, out: F32): void;
  geluTanhBackward(x: F32, dy: F32, out: F32): void;
  siluGateForward(gate: F32, up: F32, out: F32): void;
  siluGateBackward(gate: F32, up: F32, dy: F32, dGate: F32, dUp: F32): void;
}

export const FUSED_KERNELS = {
  attention: "TrainerAttention",
  attentionGrad: "TrainerAttentionGrad",
  layerNorm: "TrainerLayerNorm",
  layerNormGrad: "TrainerLayerNormGrad",
  rmsNorm: "TrainerRmsNorm",
  rmsNormGrad: "TrainerRmsNormGrad",
  crossEntropy: "TrainerSoftmaxCrossEntropy",
  crossEntropyGrad: "TrainerSoftmaxCrossEntropyGrad",
  geluTanh: "TrainerGeluTanh",
  geluTanhGrad: "TrainerGeluTanhGrad",
  siluGate: "TrainerSiluGate",
  siluGateGrad: "TrainerSiluGateGrad",
} as const;

/** Whether the active backend runs `kernel` (one of FUSED_KERNELS) natively. */
export function hasFusedKernel(kernel: string): boolean {
  return tf.getKernel(kernel, tf.getBackend()) !== undefined;
}

/**
 * Where the heads of q, k and v sit in their [batch*length, rowStride] matrices: head h of q at
 * column offsets[0] + h*headSize, and so on. Separate q/k/v: offsets 0 and rowStride heads*headSize;
 * one fused qkv: offsets 0, H·D, 2·H·D and rowStride 3·H·D.
 */
export interface AttentionAttrs {
  batch: number;
  heads: number;
  length: number;
  headSize: number;
  offsets: [number, number, number];
  rowStride: number;
  scale: number;
  causal: boolean;
}

type KernelArgs = { inputs: tf.NamedTensorInfoMap; backend: tf.KernelBackend; attrs?: tf.NamedAttrMap };

function kernel(name: string, run: (inputs: tf.NamedTensorInfoMap, wasm: BackendWasm, attrs: tf.NamedAttrMap) => tf.TensorInfo | tf.TensorInfo[]) {
  tf.registerKernel({
    kernelName: name,
    backendName: "wasm",
    kernelFunc: (({ inputs, backend, attrs }: KernelArgs) => run(inputs, backend as BackendWasm, attrs ?? {})) as tf.KernelFunc,
  });
}

/** Registers every fused kernel on the wasm backend; returns a function that removes them. */
export function registerFusedKernels(addon: FusedKernelAddon): () => void {
  const view = (wasm: BackendWasm, t: tf.TensorInfo | undefined) => (t ? (wasm.typedArrayFromHeap(t) as Float32Array) : null);
  const ints = (wasm: BackendWasm, t: tf.TensorInfo) => wasm.typedArrayFromHeap(t) as Int32Array;

  kernel(FUSED_KERNELS.attention, ({ q, k, v, keyMaskAdd, keep }, wasm, attrs) => {
    const a = attrs as unknown as AttentionAttrs;
    const context = wasm.makeOutput([a.batch * a.length, a.heads * a.headSize], "float32");
    const probs = wasm.makeOutput([a.batch, a.heads, a.length, a.length], "float32");
    // Views are taken after the outputs are allocated: allocation may grow (and move) the heap.
    addon.attentionForward(
      view(wasm, q)!, view(wasm, k)!, view(wasm, v)!, Int32Array.from(a.offsets), a.rowStride, a.batch, a.heads, a.length, a.headSize,
      a.scale, a.causal, view(wasm, keyMaskAdd), view(wasm, keep), view(wasm, probs)!, view(wasm, context)!,
    );
    return [context, probs];
  });

  kernel(FUSED_KERNELS.attentionGrad, ({ q, k, v, probs, keep, dContext }, wasm, attrs) => {
    const a = attrs as unknown as AttentionAttrs;
    const fused = q!.dataId === k!.dataId && k!.dataId === v!.dataId;
    const hd = a.heads * a.headSize;
    const outputs = fused ? [wasm.makeOutput(q!.shape, "float32")] : [0, 1, 2].map(() => wasm.makeOutput([a.batch * a.length, hd], "float32"));
    const [dq, dk, dv] = fused ? [outputs[0], outputs[0], outputs[0]] : outputs;
    addon.attentionBackward(
      view(wasm, q)!, view(wasm, k)!, view(wasm, v)!, Int32Array.from(a.offsets), a.rowStride, a.batch, a.heads, a.length, a.headSize,
      a.scale, view(wasm, probs)!, view(wasm, keep), view(wasm, dContext)!, view(wasm, dq)!, view(wasm, dk)!, view(wasm, dv)!,
      Int32Array.from(fused ? a.offsets : [0, 0, 0]), fused ? a.rowStride : hd, a.causal,
    );
    return outputs;
  });

  kernel(FUSED_KERNELS.layerNorm, ({ x, gamma, beta }, wasm, attrs) => {
    const rows = x!.shape[0];
    const outputs = [wasm.makeOutput(x!.shape, "float32"), wasm.makeOutput([rows], "float32"), wasm.makeOutput([rows], "float32")];
    const [y, mean, rstd] = outputs.map((t) => view(wasm, t)!);
    addon.layerNormForward(view(wasm, x)!, view(wasm, gamma)!, view(wasm, beta)!, attrs.epsilon as number, y, mean, rstd);
    return outputs;
  });

  kernel(FUSED_KERNELS.layerNormGrad, ({ dy, x, gamma, mean, rstd }, wasm, attrs) => {
    const affine = attrs.affineGrads as boolean;
    const outputs = [wasm.makeOutput(x!.shape, "float32"), ...(affine ? [wasm.makeOutput(gamma!.shape, "float32"), wasm.makeOutput(gamma!.shape, "float32")] : [])];
    addon.layerNormBackward(
      view(wasm, dy)!, view(wasm, x)!, view(wasm, gamma)!, view(wasm, mean)!, view(wasm, rstd)!, view(wasm, outputs[0])!, view(wasm, outputs[1]), view(wasm, outputs[2]),
    );
    return outputs;
  });

  kernel(FUSED_KERNELS.rmsNorm, ({ x, weight }, wasm, attrs) => {
    const outputs = [wasm.makeOutput(x!.shape, "float32"), wasm.makeOutput([x!.shape[0]], "float32")];
    addon.rmsNormForward(view(wasm, x)!, view(wasm, weight)!, attrs.epsilon as number, view(wasm, outputs[0])!, view(wasm, outputs[1])!);
    return outputs;
  });

  kernel(FUSED_KERNELS.rmsNormGrad, ({ dy, x, weight, rstd }, wasm, attrs) => {
    const outputs = [wasm.makeOutput(x!.shape, "float32"), ...(attrs.weightGrad ? [wasm.makeOutput(weight!.shape, "float32")] : [])];
    addon.rmsNormBackward(view(wasm, dy)!, view(wasm, x)!, view(wasm, weight)!, view(wasm, rstd)!, view(wasm, outputs[0])!, view(wasm, outputs[1]));
    return outputs;
  });

  kernel(FUSED_KERNELS.crossEntropy, ({ logits, labels }, wasm) => {
    const nll = wasm.makeOutput([logits!.shape[0]], "float32");
    addon.softmaxCrossEntropy(view(wasm, logits)!, ints(wasm, labels!), view(wasm, nll)!);
    return nll;
  });

  kernel(FUSED_KERNELS.crossEntropyGrad, ({ logits, labels, dNll }, wasm) => {
    const dLogits = wasm.makeOutput(logits!.shape, "float32");
    addon.softmaxCrossEntropyBackward(view(wasm, logits)!, ints(wasm, labels!), view(wasm, dNll)!, view(wasm, dLogits)!);
    return dLogits;
  });

  kernel(FUSED_KERNELS.geluTanh, ({ x }, wasm) => {
    const out = wasm.makeOutput(x!.shape, "float32");
    addon.geluTanhForward(view(wasm, x)!, view(wasm, out)!);
    return out;
  });

  kernel(FUSED_KERNELS.geluTanhGrad, ({ x, dy }, wasm) => {
    const out = wasm.makeOutput(x!.shape, "float32");
    addon.geluTanhBackward(view(wasm, x)!, view(wasm, dy)!, view(wasm, out)!);
    return out;
  });

  kernel(FUSED_KERNELS.siluGate, ({ gate, up }, wasm) => {
    const out = wasm.makeOutput(gate!.shape, "float32");
    addon.siluGateForward(view(wasm, gate)!, view(wasm, up)!, view(wasm, out)!);
    return out;
  });

  kernel(FUSED_KERNELS.siluGateGrad, ({ gate, up, dy }, wasm) => {
    const outputs = [wasm.makeOutput(gate!.shape, "float32"), wasm.makeOutput(up!.shape, "float32")];
    addon.siluGateBackward(view(wasm, gate)!, view(wasm, up)!, view(wasm, dy)!, view(wasm, outputs[0])!, view(wasm, outputs[1])!);
    return outputs;
  });

  return () => {
    for (const name of Object.values(FUSED_KERNELS)) tf.unregisterKernel(name, "wasm");
  };
}
