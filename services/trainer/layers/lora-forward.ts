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
  constructor(
    private readonly seed: string,
    private calls = 0,
  ) {}

  /** Where the counter stands: a dropout made with `replayFrom` of it draws the same masks from here on. */
  get position(): number {
    return this.calls;
  }

  /** A dropout that draws again the masks this one drew from `position` on (a recomputed layer's). */
  replayFrom(position: number): Dropout {
    return new Dropout(this.seed, position);
  }

  apply<T extends tf.Tensor>(x: T, rate: number): T {
    if (rate <= 0) return x;
    const keep = tf.randomUniform(x.shape, 0, 1, "float32", `${this.seed}/${this.calls++}`).greaterEqual(rate);
    return x.mul(keep.cast("float32")).div(1 - rate) as T;
  }

  /**
   * apply() on the whole [sequences·length, ·] matrix whose first rows x holds (see FirstRows): the
   * mask is drawn, and the counter moves, exactly as for the whole, so a forward pass that computes
   * only those rows drops out the same elements as one that computes all.
   */
  applyFirstRows<T extends tf.Tensor>(x: T, rate: number, rows: FirstRows): T {
    if (rate <= 0) return x;
    const whole = [rows.sequences * rows.length, ...x.shape.slice(1)];
    const keep = tf.randomUniform(whole, 0, 1, "float32", `${this.seed}/${this.calls++}`).greaterEqual(rate);
    return x.mul(firstRowsOf(keep.cast("float32"), rows)).div(1 - rate) as T;
  }
}

/** A matrix of `sequences` rows standing for the first row of each sequence of a [sequences·length, ·] one. */
export interface FirstRows {
  sequences: number;
  length: number;
}

/** The first row of every sequence of a [sequences·length, width] matrix, as [sequences, width]. */
export function firstRowsOf(x: tf.Tensor, rows: FirstRows): tf.Tensor2D {
  const width = x.size / (rows.sequences * rows.length);
  return x.reshape([rows.sequences, rows.length * width]).slice([0, 0], [rows.sequences, width]) as tf.Tensor2D;
}

export interface ForwardOptions {
  /** LoRA modules by Hugging Face module path; absent for the base model. */
  lora?: Map<string, LoraModule>;
  /** Parameters that override the frozen weights by name (the trained classification head). */
  overrides?: Map<string, tf.Tensor>;
  /** Present only in training: enables every dropout of the model. */
  dropout?: Dropout;
  /** Training only: recompute each decoder layer in the backward instead of keeping its intermediates (layers/checkpoint.ts). */
  checkpointLayers?: boolean;
}

/** PEFT's LoRA term for a linear layer: scale · B A dropout(x); x may hold only first rows (Dropout.applyFirstRows). */
export function loraBranch(x: tf.Tensor2D, lora?: LoraModule, dropout?: Dropout, rows?: FirstRows): LoraBranch | undefined {
  const input = !dropout || !lora ? x : rows ? dropout.applyFirstRows(x, lora.dropout, rows) : dropout.apply(x, lora.dropout);
  return lora && { input, a: lora.a, b: lora.b, scale: lora.scale };
}

/** nn.Linear (y = x Wᵀ + b, W stored [out, in] as in Hugging Face) plus PEFT's LoRA term scale · B A dropout(x). */
export function loraLinear(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor, lora?: LoraModule, dropout?: Dropout, rows?: FirstRows, inputGrad = true): tf.Tensor2D {
  return linear(x, { weight: weight as tf.Tensor2D }, bias, loraBranch(x, lora, dropout, rows), { inputGrad });
}
