// bench:train --full: every encoder weight and the classification head train, with the engine's
// model, loss and AdamW (the memory comparison against full fine-tuning in PyTorch).
import { readFile } from "node:fs/promises";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { crossEntropy } from "../services/trainer/losses.ts";
import { AdamW, ADAMW_DEFAULTS } from "../services/trainer/optim.ts";
import { encodeExamples } from "../services/trainer/tasks/classification/data.ts";
import { initialHead, loadPretrained } from "../services/trainer/tasks/classification/load.ts";
import { LABELS } from "./workloads.ts";

/** Trains every weight of the encoder in `dir` for `steps` steps; `onStep` after each. */
export async function trainEveryWeight(dir: string, steps: number, batchSize: number, seqLength: number, onStep: (loss: number) => void): Promise<void> {
  const pretrained = await loadPretrained(dir);
  const { model, tokenizer } = pretrained;
  const params = new Map<string, tf.Variable>();
  for (const [name, weight] of model.weights) params.set(name, tf.variable(weight, true));
  // The engine keeps frozen linear weights transposed ([in, out]); trained ones are [out, in] overrides.
  for (const [module, transposed] of model.linearWeights) {
    params.set(`${module}.weight`, tf.variable(transposed.transpose(), true));
    transposed.dispose();
  }
  for (const [name, { shape, data }] of initialHead(pretrained, LABELS.length, 1)) params.set(name, tf.variable(tf.tensor(data, shape), true));
  const records = (await readFile(path.join(dir, "train.jsonl"), "utf8")).trim().split("\n").map((line) => JSON.parse(line));
  const examples = encodeExamples(records, tokenizer, seqLength, LABELS);
  const optimizer = new AdamW({ ...ADAMW_DEFAULTS, weightDecay: 0.01 });
  const names = new Map([...params].map(([name, variable]) => [variable.name, name]));
  for (let step = 0; step < steps; step++) {
    const batchExamples = examples.slice(step * batchSize, (step + 1) * batchSize);
    const batch = tokenizer.pad(batchExamples);
    const { value, grads } = tf.variableGrads(
      () => crossEntropy(model.logits(batch, { overrides: params }), batchExamples.map((e) => e.label)),
      [...params.values()],
    );
    const loss = value.dataSync()[0];
    value.dispose();
    const byName = new Map(Object.entries(grads).map(([variableName, grad]) => [names.get(variableName)!, grad]));
    optimizer.apply(params, byName, 5e-4, step + 1);
    tf.dispose(Object.values(grads));
    onStep(loss);
  }
}
