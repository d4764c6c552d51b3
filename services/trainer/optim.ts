// AdamW as torch.optim.AdamW computes it (decoupled weight decay), learning-rate schedules as
// transformers' get_{linear,cosine}_schedule_with_warmup, and global gradient-norm clipping.
import * as tf from "@tensorflow/tfjs";

export interface AdamWSettings {
  beta1: number;
  beta2: number;
  epsilon: number;
  weightDecay: number;
}

export const ADAMW_DEFAULTS: Omit<AdamWSettings, "weightDecay"> = { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 };

export class AdamW {
  /** First and second moments by parameter name; only trainable parameters ever get any. */
  readonly moments = new Map<string, { m: tf.Variable; v: tf.Variable }>();

  constructor(private readonly settings: AdamWSettings) {}

  /** One update; `step` counts from 1. Biases (1-D parameters) are not decayed, as in transformers' Trainer. */
  apply(params: Map<string, tf.Variable>, grads: Map<string, tf.Tensor>, learningRate: number, step: number): void {
    const { beta1, beta2, epsilon, weightDecay } = this.settings;
    const correction1 = 1 - beta1 ** step;
    const correction2 = 1 - beta2 ** step;
    for (const [name, param] of params) {
      const grad = grads.get(name);
      if (!grad) continue;
      let moment = this.moments.get(name);
      if (!moment) {
        moment = tf.tidy(() => ({ m: tf.variable(tf.zerosLike(param), false), v: tf.variable(tf.zerosLike(param), false) }));
        this.moments.set(name, moment);
      }
      const { m, v } = moment;
      tf.tidy(() => {
        m.assign(m.mul(beta1).add(grad.mul(1 - beta1)));
        v.assign(v.mul(beta2).add(grad.square().mul(1 - beta2)));
        const decayed = weightDecay > 0 && param.rank > 1 ? param.mul(1 - learningRate * weightDecay) : param;
        const denominator = v.div(correction2).sqrt().add(epsilon);
        param.assign(decayed.sub(m.div(correction1).div(denominator).mul(learningRate)));
      });
    }
  }

  dispose(): void {
    for (const { m, v } of this.moments.values()) {
      m.dispose();
      v.dispose();
    }
    this.moments.clear();
  }
}

export function warmupSteps(totalSteps: number, warmupRatio: number): number {
  return Math.ceil(totalSteps * warmupRatio);
}

/** Multiplier of the peak learning rate for optimizer step `step` (0-based). */
export function scheduleFactor(step: number, totalSteps: number, warmup: number, kind: "linear" | "cosine"): number {
  if (step < warmup) return step / Math.max(1, warmup);
  const progress = (step - warmup) / Math.max(1, totalSteps - warmup);
  if (kind === "cosine") return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
  return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmup));
}

/** Scales gradients so their global L2 norm is at most maxNorm (torch's clip_grad_norm_); returns the norm before clipping. */
export function clipByGlobalNorm(grads: Map<string, tf.Tensor>, maxNorm: number): number {
  const squares = [...grads.values()].map((grad) => tf.tidy(() => grad.square().sum().dataSync()[0]));
  const norm = Math.sqrt(squares.reduce((a, b) => a + b, 0));
  const coefficient = maxNorm / (norm + 1e-6);
  if (coefficient < 1) {
    for (const [name, grad] of grads) {
      grads.set(name, grad.mul(coefficient));
      grad.dispose();
    }
  }
  return norm;
}
