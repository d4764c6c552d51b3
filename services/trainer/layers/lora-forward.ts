// The LoRA term every adapted linear layer adds, and the options a forward pass takes: which LoRA
// modules and trained parameters apply, and (in training only) seeded dropout. Shared by all tasks.
import * as tf from "@tensorflow/tfjs";
import { linear, type LoraBranch } from "./fused.ts";

export interface LoraModule {
  a: tf.Tensor2D; // [r, in]
  b: tf.Tensor2D; // [out, r]
  scale: number;
  dropout: number;
}

/** Seeded dropout: masks come from a seed and a call counter, so a step can be replayed exactly. */
export class Dropout {
  private calls = 0;
  constructor(private readonly seed: string) {}

  apply<T extends tf.Tensor>(x: T, rate: number): T {
    if (rate <= 0) return x;
    const keep = tf.randomUniform(x.shape, 0, 1, "float32", `${this.seed}/${this.calls++}`).greaterEqual(rate);
    return x.mul(keep.cast("float32")).div(1 - rate) as T;
  }
}

export interface ForwardOptions {
  /** LoRA modules by Hugging Face module path; absent for the base model. */
  lora?: Map<string, LoraModule>;
  /** Parameters that override the frozen weights by name (the trained classification head). */
  overrides?: Map<string, tf.Tensor>;
  /** Present only in training: enables every dropout of the model. */
  dropout?: Dropout;
}

/** PEFT's LoRA term for a linear layer: scale · B A dropout(x). */
export function loraBranch(x: tf.Tensor2D, lora?: LoraModule, dropout?: Dropout): LoraBranch | undefined {
  return lora && { input: dropout ? dropout.apply(x, lora.dropout) : x, a: lora.a, b: lora.b, scale: lora.scale };
}

/** nn.Linear (y = x Wᵀ + b, W stored [out, in] as in Hugging Face) plus PEFT's LoRA term scale · B A dropout(x). */
export function loraLinear(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor, lora?: LoraModule, dropout?: Dropout): tf.Tensor2D {
  return linear(x, { weight: weight as tf.Tensor2D }, bias, loraBranch(x, lora, dropout));
}
