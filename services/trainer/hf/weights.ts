// The weights of a Hugging Face folder as stored (model.safetensors or its shards), for every task.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { decodeRawTensor, visitSafetensors, type NamedArray, type RawTensor } from "../safetensors.ts";
import type { FrozenLinear } from "../native/frozen-linear.ts";
import { ModelConfigError } from "./config.ts";

/** A checkpoint tensor: float32 values, or (for a frozen linear weight) the addon's stored form and no values. */
export interface StoredTensor extends NamedArray {
  frozen?: FrozenLinear;
}

/** Turns a tensor into its addon-held form as it is read, or returns undefined to keep it as float32. */
export type Freeze = (tensor: RawTensor) => FrozenLinear | undefined;

/**
 * model.safetensors, or the shards listed in model.safetensors.index.json, read tensor by tensor:
 * with `freeze`, linear weights go into their final (maybe quantized) form one at a time, so loading
 * holds the model's final size plus one tensor.
 */
export async function readCheckpoint(dir: string, freeze?: Freeze): Promise<Map<string, StoredTensor>> {
  const tensors = new Map<string, StoredTensor>();
  const keep = (raw: RawTensor) => {
    const frozen = freeze?.(raw);
    tensors.set(raw.name, frozen ? { shape: raw.shape, data: new Float32Array(0), frozen } : decodeRawTensor(raw));
  };
  if (existsSync(path.join(dir, "model.safetensors"))) {
    await visitSafetensors(path.join(dir, "model.safetensors"), keep);
    return tensors;
  }
  const index = path.join(dir, "model.safetensors.index.json");
  if (!existsSync(index)) {
    throw new ModelConfigError(`${dir} has no model.safetensors (pytorch_model.bin is not read: convert it to safetensors first)`);
  }
  const { weight_map: weightMap } = JSON.parse(await readFile(index, "utf8")) as { weight_map: Record<string, string> };
  for (const shard of new Set(Object.values(weightMap))) await visitSafetensors(path.join(dir, shard), keep);
  return tensors;
}

/** An [out, in] matrix as a tensor of shape [in, out]. */
export function transposed({ shape: [out, inFeatures], data }: NamedArray): tf.Tensor2D {
  const result = new Float32Array(out * inFeatures);
  for (let o = 0; o < out; o++) for (let i = 0; i < inFeatures; i++) result[i * out + o] = data[o * inFeatures + i];
  return tf.tensor2d(result, [inFeatures, out], "float32");
}
