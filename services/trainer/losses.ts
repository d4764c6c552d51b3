// The training loss of every task: classification over labels, causal LMs over next tokens.
import * as tf from "@tensorflow/tfjs";
import { softmaxCrossEntropyRows } from "./layers/fused.ts";
import { inPart } from "./layers/parts.ts";
import { FUSED_KERNELS, hasFusedKernel } from "./native/fused-kernels.ts";

/** Mean cross-entropy; with class weights, weighted as torch's CrossEntropyLoss(weight=...). */
export function crossEntropy(logits: tf.Tensor2D, labels: number[], classWeights?: number[]): tf.Scalar {
  return inPart("loss", () => plainCrossEntropy(logits, labels, classWeights));
}

function plainCrossEntropy(logits: tf.Tensor2D, labels: number[], classWeights?: number[]): tf.Scalar {
  // The addon's kernel reads each row once and never builds the [rows, classes] one-hot matrix.
  const nll =
    hasFusedKernel(FUSED_KERNELS.crossEntropy) && labels.length > 0
      ? softmaxCrossEntropyRows(logits, tf.tensor1d(labels, "int32"))
      : tf.oneHot(tf.tensor1d(labels, "int32"), logits.shape[1]).mul(tf.logSoftmax(logits)).sum(1).neg();
  if (!classWeights) return nll.mean() as tf.Scalar;
  const weights = tf.tensor1d(labels.map((label) => classWeights[label]));
  return nll.mul(weights).sum().div(weights.sum()) as tf.Scalar;
}
