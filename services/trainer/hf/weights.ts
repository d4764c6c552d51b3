// The weights of a Hugging Face folder as stored (model.safetensors or its shards), for every task.
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { readSafetensors, type NamedArray } from "../safetensors.ts";
import { ModelConfigError } from "./config.ts";

/** model.safetensors, or the shards listed in model.safetensors.index.json. */
export async function readCheckpoint(dir: string): Promise<Map<string, NamedArray>> {
  if (existsSync(path.join(dir, "model.safetensors"))) return readSafetensors(path.join(dir, "model.safetensors"));
  const index = path.join(dir, "model.safetensors.index.json");
  if (!existsSync(index)) {
    throw new ModelConfigError(`${dir} has no model.safetensors (pytorch_model.bin is not read: convert it to safetensors first)`);
  }
  const { weight_map: weightMap } = JSON.parse(await readFile(index, "utf8")) as { weight_map: Record<string, string> };
  const tensors = new Map<string, NamedArray>();
  for (const shard of new Set(Object.values(weightMap))) for (const [name, value] of await readSafetensors(path.join(dir, shard))) tensors.set(name, value);
  return tensors;
}

/** An [out, in] matrix as a tensor of shape [in, out]. */
export function transposed({ shape: [out, inFeatures], data }: NamedArray): tf.Tensor2D {
  const result = new Float32Array(out * inFeatures);
  for (let o = 0; o < out; o++) for (let i = 0; i < inFeatures; i++) result[i * out + o] = data[o * inFeatures + i];
  return tf.tensor2d(result, [inFeatures, out], "float32");
}
