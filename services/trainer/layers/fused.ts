// Building blocks of every model (encoders and decoders) with hand-written gradients (linear with
// LoRA, attention, layer norm, RMSNorm, SwiGLU's silu(gate)·up, cross-entropy rows), and the
// activations configs name. tfjs keeps every intermediate tensor of a step alive until the gradients
// are done (forward temporaries and every accumulated gradient), so a composite op written with plain
// ops holds several full-size copies of its activations. Each block here keeps only what its backward
// needs (everything the backward reads goes through `save`: a caller's tidy may dispose the originals
// before the backward runs), frees its own temporaries, and returns gradients only for inputs that can
// be trained (a frozen weight is a constant, not an input): that also skips the weight-gradient
// products LoRA does not need.
import * as tf from "@tensorflow/tfjs";
import { blasProductsActive, GELU_GRAD_KERNEL, GELU_KERNEL } from "../native/blas.ts";
import { FUSED_KERNELS, hasFusedKernel } from "../native/fused-kernels.ts";
import { frozenInputGrad, frozenProduct, type FrozenLinear } from "../native/frozen-linear.ts";
import { inPart } from "./parts.ts";

type Grad = (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** A tfjs customGrad over `inputs`, with the backward run inside its own tidy; `part` names it for profiles. */
function custom(part: string, inputs: tf.Tensor[], forward: (save: (tensors: tf.Tensor[]) => void) => { value: tf.Tensor; gradFunc: Grad }): tf.Tensor {
  return tf.customGrad((...args: unknown[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const { value, gradFunc } = inPart(part, () => forward(save));
    return { value, gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => inPart(part, () => tf.tidy(() => gradFunc(dy, saved))) };
  })(...inputs);
}

/** Frozen model weights are plain tensors; trained ones are trainable variables. */
function isTrained(t: tf.Tensor): boolean {
  return t instanceof tf.Variable && t.trainable;
}

/** GELU, erf form (Hugging Face "gelu"); keeps only its input for the backward. */
export function gelu(x: tf.Tensor): tf.Tensor {
  // One pass each way where the backend has the BLAS addon's GELU kernels.
  const native = tf.getKernel(GELU_KERNEL, tf.getBackend()) !== undefined;
  return custom("gelu", [x], (save) => {
    save([x]);
    return {
      value: native ? (tf.engine().runKernel(GELU_KERNEL, { x }) as tf.Tensor) : x.mul(0.5).mul(tf.erf(x.mul(Math.SQRT1_2)).add(1)),
      gradFunc: (dy, [input]) => {
        if (native) return tf.engine().runKernel(GELU_GRAD_KERNEL, { x: input, dy }) as tf.Tensor;
        const cdf = tf.erf(input.mul(Math.SQRT1_2)).add(1).mul(0.5);
        const pdf = tf.exp(input.square().mul(-0.5)).mul(1 / Math.sqrt(2 * Math.PI));
        return dy.mul(cdf.add(input.mul(pdf)));
      },
    };
  });
}

/** LayerNorm over the last axis; keeps the normalised input and 1/σ for the backward. */
export function layerNorm(x: tf.Tensor2D, gamma: tf.Tensor, beta: tf.Tensor, epsilon: number): tf.Tensor2D {
  const trainedAffine = isTrained(gamma) || isTrained(beta);
  if (hasFusedKernel(FUSED_KERNELS.layerNorm) && x.size > 0) {
    // One native pass each way; keeps x and two numbers per row.
    return custom("layer norm", trainedAffine ? [x, gamma, beta] : [x], (save) => {
      const [y, mean, rstd] = tf.engine().runKernel(FUSED_KERNELS.layerNorm, { x, gamma, beta }, { epsilon }) as tf.Tensor[];
      save([x, gamma, mean, rstd]);
      return {
        value: y,
        gradFunc: (dy, [input, scale, m, r]) => {
          const grads = tf.engine().runKernel(FUSED_KERNELS.layerNormGrad, { dy, x: input, gamma: scale, mean: m, rstd: r }, { affineGrads: trainedAffine }) as tf.Tensor[];
          return trainedAffine ? grads : grads[0];
        },
      };
    }) as tf.Tensor2D;
  }
  return custom("layer norm", trainedAffine ? [x, gamma, beta] : [x], (save) => {
    const { mean, variance } = tf.moments(x, -1, true);
    const inverseStd = tf.rsqrt(variance.add(epsilon));
    const normalised = x.sub(mean).mul(inverseStd);
    save([normalised, inverseStd, gamma]);
    return {
      value: normalised.mul(gamma).add(beta),
      gradFunc: (dy, [xHat, rstd, scale]) => {
        const g = dy.mul(scale);
        const dx = rstd.mul(g.sub(g.mean(-1, true)).sub(xHat.mul(g.mul(xHat).mean(-1, true))));
        return trainedAffine ? [dx, dy.mul(xHat).sum(0), dy.sum(0)] : dx;
      },
    };
  }) as tf.Tensor2D;
}

/** x · rsqrt(mean(x²) + eps) · weight over the last axis, as LlamaRMSNorm (in float32); keeps x (x̂ without the addon) and 1/rms per row. */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor, epsilon: number): tf.Tensor2D {
  const trainedWeight = isTrained(weight);
  const native = hasFusedKernel(FUSED_KERNELS.rmsNorm) && x.size > 0;
  return custom("rms norm", trainedWeight ? [x, weight] : [x], (save) => {
    if (native) {
      const [y, rstd] = tf.engine().runKernel(FUSED_KERNELS.rmsNorm, { x, weight }, { epsilon }) as tf.Tensor[];
      save([x, weight, rstd]);
      return {
        value: y,
        gradFunc: (dy, [input, scale, r]) => {
          const grads = tf.engine().runKernel(FUSED_KERNELS.rmsNormGrad, { dy, x: input, weight: scale, rstd: r }, { weightGrad: trainedWeight }) as tf.Tensor[];
          return trainedWeight ? grads : grads[0];
        },
      };
    }
    const inverseRms = x.square().mean(-1, true).add(epsilon).rsqrt();
    const normalised = x.mul(inverseRms);
    save([normalised, inverseRms, weight]);
    return {
      value: normalised.mul(weight),
      gradFunc: (dy, [xHat, r, scale]) => {
        const g = dy.mul(scale);
        const dx = r.mul(g.sub(xHat.mul(g.mul(xHat).mean(-1, true))));
        return trainedWeight ? [dx, dy.mul(xHat).sum(0)] : dx;
      },
    };
  }) as tf.Tensor2D;
}

export interface LoraBranch {
  /** The branch's input: x itself, or x after LoRA dropout. */
  input: tf.Tensor2D;
  a: tf.Tensor2D; // [r, in]
  b: tf.Tensor2D; // [out, r]
  scale: number;
}

/** A linear layer's weight: as Hugging Face stores it ([out, in]), pre-transposed ([in, out]), or held (maybe quantized) by the addon. */
export type LinearWeight = { weight: tf.Tensor2D } | { transposedWeight: tf.Tensor2D } | { frozen: FrozenLinear };

/** x·Wᵀ (+ bias); on BLAS the bias is added in the product's own pass (the addon's _FusedMatMul). */
function product(x: tf.Tensor2D, stored: tf.Tensor2D, transposed: boolean, bias: tf.Tensor | undefined): tf.Tensor {
  if (bias && blasProductsActive()) return tf.fused.matMul({ a: x, b: stored, transposeB: !transposed, bias });
  const y = transposed ? x.matMul(stored) : x.matMul(stored, false, true);
  return bias ? y.add(bias) : y;
}

/**
 * y = x·Wᵀ (+ bias) (+ scale·(input·Aᵀ)·Bᵀ). The backward needs dy·W: with W pre-transposed that is
 * a transposed product, which OpenBLAS runs as fast as a plain one but tfjs's own wasm kernel
 * about ten times slower, so without BLAS the backward transposes first. `inputGrad: false` says
 * no trained parameter lies upstream of x (the first layer over frozen embeddings): the backward
 * then skips dy·W, as PyTorch's autograd does for inputs that need no gradient.
 */
export function linear(x: tf.Tensor2D, weight: LinearWeight, bias: tf.Tensor | undefined, lora?: LoraBranch, { inputGrad = true } = {}): tf.Tensor2D {
  if ("frozen" in weight) return frozenLinear(x, weight.frozen, bias, lora, inputGrad);
  const stored = "weight" in weight ? weight.weight : weight.transposedWeight;
  const transposed = !("weight" in weight);
  const trainedWeight = isTrained(stored) || (bias !== undefined && isTrained(bias));
  if (trainedWeight && transposed) throw new Error("linear: a trained weight must be given as [out, in]");
  const separateLoraInput = lora !== undefined && lora.input !== x;
  const inputs: tf.Tensor[] = inputGrad ? [x] : [];
  if (lora) inputs.push(...(separateLoraInput && inputGrad ? [lora.input] : []), lora.a, lora.b);
  if (trainedWeight) inputs.push(stored, ...(bias ? [bias] : []));
  // Nothing to train through: plain ops, nothing kept for a backward.
  if (inputs.length === 0) return product(x, stored, transposed, bias) as tf.Tensor2D;
  return custom(lora ? "linear + LoRA" : "linear", inputs, (save) => {
    let y = product(x, stored, transposed, bias);
    let down: tf.Tensor2D | undefined;
    if (lora) {
      down = lora.input.matMul(lora.a, false, true).mul(lora.scale) as tf.Tensor2D;
      y = y.add(down.matMul(lora.b, false, true));
    }
    save([stored, ...(lora ? [lora.input, down!, lora.a, lora.b] : []), ...(trainedWeight ? [x] : [])]);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const dyMatrix = dy as tf.Tensor2D;
        const w = saved[0] as tf.Tensor2D;
        let dx: tf.Tensor | undefined;
        if (inputGrad) dx = !transposed ? dyMatrix.matMul(w) : blasProductsActive() ? dyMatrix.matMul(w, false, true) : dyMatrix.matMul(w.transpose());
        const grads: tf.Tensor[] = [];
        if (lora) {
          const [loraInput, scaledDown, a, b] = saved.slice(1) as tf.Tensor2D[];
          const dDown = dyMatrix.matMul(b).mul(lora.scale) as tf.Tensor2D;
          if (inputGrad) {
            const dLoraInput = dDown.matMul(a);
            if (separateLoraInput) grads.push(dLoraInput);
            else dx = dx!.add(dLoraInput);
          }
          grads.push(dDown.matMul(loraInput, true, false), dyMatrix.matMul(scaledDown, true, false));
        }
        if (trainedWeight) grads.push(dyMatrix.matMul(saved[saved.length - 1], true, false), ...(bias ? [dyMatrix.sum(0)] : []));
        return dx ? [dx, ...grads] : grads;
      },
    };
  }) as tf.Tensor2D;
}

/** linear() over an addon-held weight: the forward and dy·W run on the addon, and nothing of W is saved. */
function frozenLinear(x: tf.Tensor2D, weight: FrozenLinear, bias: tf.Tensor | undefined, lora: LoraBranch | undefined, inputGrad: boolean): tf.Tensor2D {
  const withBias = (y: tf.Tensor2D) => (bias ? (y.add(bias) as tf.Tensor2D) : y);
  const separateLoraInput = lora !== undefined && lora.input !== x;
  const inputs: tf.Tensor[] = inputGrad ? [x] : [];
  if (lora) inputs.push(...(separateLoraInput && inputGrad ? [lora.input] : []), lora.a, lora.b);
  if (inputs.length === 0) return withBias(frozenProduct(x, weight));
  return custom(lora ? "linear + LoRA" : "linear", inputs, (save) => {
    let y = withBias(frozenProduct(x, weight));
    let down: tf.Tensor2D | undefined;
    if (lora) {
      down = lora.input.matMul(lora.a, false, true).mul(lora.scale) as tf.Tensor2D;
      y = y.add(down.matMul(lora.b, false, true)) as tf.Tensor2D;
    }
    save(lora ? [lora.input, down!, lora.a, lora.b] : []);
    return {
      value: y,
      gradFunc: (dy, saved) => {
        const dyMatrix = dy as tf.Tensor2D;
        let dx = inputGrad ? (frozenInputGrad(dyMatrix, weight) as tf.Tensor) : undefined;
        const grads: tf.Tensor[] = [];
        if (lora) {
          const [loraInput, scaledDown, a, b] = saved as tf.Tensor2D[];
          const dDown = dyMatrix.matMul(b).mul(lora.scale) as tf.Tensor2D;
          if (inputGrad) {
            const dLoraInput = dDown.matMul(a);
            if (separateLoraInput) grads.push(dLoraInput);
            else dx = dx!.add(dLoraInput);
          }
          grads.push(dDown.matMul(loraInput, true, false), dyMatrix.matMul(scaledDown, true, false));
        }
        return dx ? [dx, ...grads] : grads;
      },
    };
  }) as tf.Tensor2D;
}

/**
 * softmax(q·kᵀ·scale + maskAdd)·v over heads ([batch, heads, tokens, headSize]); `keep` is the
 * attention-dropout mask already divided by the keep rate. Keeps the probabilities for the backward.
 */
export function attention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, maskAdd: tf.Tensor, scale: number, keep?: tf.Tensor): tf.Tensor4D {
  return custom("attention", [q, k, v], (save) => {
    const probabilities = tf.softmax(q.matMul(k, false, true).mul(scale).add(maskAdd));
    const used = keep ? probabilities.mul(keep) : probabilities;
    save([q, k, v, probabilities, ...(keep ? [keep] : [])]);
    return {
      value: used.matMul(v),
      gradFunc: (dy, [query, key, value, p, keep]) => {
        const dUsed = dy.matMul(value, false, true);
        const dValue = (keep ? p.mul(keep) : p).matMul(dy, true, false);
        const dP = keep ? dUsed.mul(keep) : dUsed;
        const dScores = p.mul(dP.sub(dP.mul(p).sum(-1, true))).mul(scale);
        return [dScores.matMul(key), dScores.matMul(query, true, false), dValue];
      },
    };
  }) as tf.Tensor4D;
}

/** How the heads of attentionOverRows's inputs are laid out: [batch*length, heads*headSize] per projection. */
export interface HeadsLayout {
  batch: number;
  heads: number;
  length: number;
  headSize: number;
}

export interface AttentionOptions {
  scale: number;
  causal: boolean;
  /** Additive key mask, batch × length values (0 or the lowest float). */
  keyMaskAdd?: tf.Tensor;
  /** Attention-dropout mask [batch, heads, length, length], already divided by the keep rate. */
  keep?: tf.Tensor;
}

/** Whether attentionOverRows runs here (the addon's fused attention is registered on the backend). */
export function rowAttentionAvailable(): boolean {
  return hasFusedKernel(FUSED_KERNELS.attention);
}

/**
 * Self-attention on the addon's fused kernel, reading each head by strides from [batch*length, ·]
 * projections and writing the context as [batch*length, heads*headSize]: no split or merge
 * transposes. q, k and v are separate [rows, H·D] matrices, or one fused [rows, 3·H·D] qkv passed
 * three times. Keeps q, k, v, the probabilities and the dropout mask for the backward.
 */
export function attentionOverRows(q: tf.Tensor2D, k: tf.Tensor2D, v: tf.Tensor2D, layout: HeadsLayout, options: AttentionOptions): tf.Tensor2D {
  const fused = q === k && k === v;
  const hd = layout.heads * layout.headSize;
  const attrs = { ...layout, scale: options.scale, causal: options.causal, offsets: fused ? [0, hd, 2 * hd] : [0, 0, 0], rowStride: fused ? 3 * hd : hd };
  const { keyMaskAdd, keep } = options;
  return custom("attention", fused ? [q] : [q, k, v], (save) => {
    const inputs = { q, k, v, ...(keyMaskAdd ? { keyMaskAdd } : {}), ...(keep ? { keep } : {}) };
    const [context, probs] = tf.engine().runKernel(FUSED_KERNELS.attention, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    save(fused ? [q, probs, ...(keep ? [keep] : [])] : [q, k, v, probs, ...(keep ? [keep] : [])]);
    return {
      value: context,
      gradFunc: (dContext, saved) => {
        const [sq, sk, sv] = fused ? [saved[0], saved[0], saved[0]] : saved;
        const [probabilities, mask] = saved.slice(fused ? 1 : 3);
        const gradInputs = { q: sq, k: sk, v: sv, probs: probabilities, dContext, ...(mask ? { keep: mask } : {}) };
        const grads = tf.engine().runKernel(FUSED_KERNELS.attentionGrad, gradInputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
        return fused ? grads[0] : grads;
      },
    };
  }) as tf.Tensor2D;
}

/** Per-row cross-entropy −log softmax(logits)[label] on the addon's kernel (labels outside the classes give 0). */
export function softmaxCrossEntropyRows(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Tensor1D {
  return custom("loss", [logits], (save) => {
    save([logits, labels]);
    return {
      value: tf.engine().runKernel(FUSED_KERNELS.crossEntropy, { logits, labels }) as tf.Tensor,
      gradFunc: (dNll, [input, ids]) => tf.engine().runKernel(FUSED_KERNELS.crossEntropyGrad, { logits: input, labels: ids, dNll }) as tf.Tensor,
    };
  }) as tf.Tensor1D;
}

/** GPT-2's tanh GELU on the addon's kernels; keeps only its input. */
function geluTanh(x: tf.Tensor): tf.Tensor {
  return custom("gelu", [x], (save) => {
    save([x]);
    return {
      value: tf.engine().runKernel(FUSED_KERNELS.geluTanh, { x }) as tf.Tensor,
      gradFunc: (dy, [input]) => tf.engine().runKernel(FUSED_KERNELS.geluTanhGrad, { x: input, dy }) as tf.Tensor,
    };
  });
}

/** silu(gate)·up, the SwiGLU MLP's gating, in one pass each way on the addon; keeps only gate and up. */
export function siluGate(gate: tf.Tensor2D, up: tf.Tensor2D): tf.Tensor2D {
  const native = hasFusedKernel(FUSED_KERNELS.siluGate) && gate.size > 0;
  return custom("silu gate", [gate, up], (save) => {
    save([gate, up]);
    return {
      value: native ? (tf.engine().runKernel(FUSED_KERNELS.siluGate, { gate, up }) as tf.Tensor) : gate.mul(tf.sigmoid(gate)).mul(up),
      gradFunc: (dy, [g, u]) => {
        if (native) return tf.engine().runKernel(FUSED_KERNELS.siluGateGrad, { gate: g, up: u, dy }) as tf.Tensor[];
        const sigmoid = tf.sigmoid(g);
        return [dy.mul(u).mul(sigmoid).mul(g.mul(sigmoid.neg().add(1)).add(1)), dy.mul(g.mul(sigmoid))];
      },
    };
  }) as tf.Tensor2D;
}

/** The activation a config names, Hugging Face's names. */
export function activation(name: string, x: tf.Tensor): tf.Tensor {
  switch (name) {
    case "gelu":
      return gelu(x);
    case "gelu_new":
    case "gelu_pytorch_tanh": {
      if (hasFusedKernel(FUSED_KERNELS.geluTanh) && x.dtype === "float32") return geluTanh(x);
      const inner = x.add(x.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI));
      return x.mul(0.5).mul(tf.tanh(inner).add(1));
    }
    case "relu":
      return tf.relu(x);
    case "silu":
    case "swish":
      return x.mul(tf.sigmoid(x));
    default:
      throw new Error(`activation "${name}" is not supported`);
  }
}
