// The classifier's last encoder layer computes only each sequence's first token (all the head reads):
// its hidden states and LoRA gradients must equal the first rows of the whole-sequence pass, with
// every dropout active (masks drawn as for all rows), on DistilBERT and BERT layouts, with and
// without the BLAS addon's kernels.
import assert from "node:assert/strict";
import { before, describe, it } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { Dropout, firstRowsOf } from "../../services/trainer/layers/lora-forward.ts";
import { adapterForwardOptions, loraKey } from "../../services/trainer/lora.ts";
import { layerModules } from "../../services/trainer/tasks/classification/encoder.ts";
import { loadPretrained } from "../../services/trainer/tasks/classification/load.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

const rng = new Rng(5);
const random = (shape: number[], std: number) => tf.tensor(rng.fill(tf.util.sizeFromShape(shape), (r) => r.normal(0, std)), shape);

function assertClose(actual: tf.Tensor, expected: tf.Tensor, tolerance = 1e-4) {
  assert.deepEqual(actual.shape, expected.shape);
  const a = actual.dataSync();
  const e = expected.dataSync();
  const scale = Array.from(e).reduce((max: number, value) => Math.max(max, Math.abs(Number(value))), 1e-3);
  for (let i = 0; i < e.length; i++) {
    if (!(Math.abs(a[i] - e[i]) <= tolerance * scale)) assert.fail(`element ${i}: ${a[i]} != ${e[i]}`);
  }
}

describe("classifier's first-token last layer", () => {
  before(async () => {
    await initBackend("auto");
    await engineFixtures();
  });

  for (const fixture of ["distilbert-cls", "bert-cls"]) {
    it(`${fixture}: same first-token states and LoRA gradients as the whole pass, dropout on`, async () => {
      const { model, tokenizer } = await loadPretrained(fixtureModel(fixture));
      const config = model.config;
      const last = layerModules(config, config.numLayers - 1);
      const first = layerModules(config, 0);
      const tensors = new Map<string, tf.Tensor>();
      const variables: tf.Variable[] = [];
      for (const module of [first.query, first.value, last.query, last.value, last.intermediate, last.output, last.attentionOutput]) {
        const [out, inFeatures] = model.linearShape(module)!;
        for (const [matrix, shape] of [["A", [4, inFeatures]], ["B", [out, 4]]] as const) {
          const variable = tf.variable(random([...shape], 0.3), true);
          variables.push(variable);
          tensors.set(loraKey(module, matrix), variable);
        }
      }
      const texts = ["a fine film", "dull and slow, far too long for what it says", "ok"];
      const batch = tokenizer.pad(texts.map((text) => tokenizer.encode(text, 32)));
      const rows = { sequences: batch.batchSize, length: batch.length };
      const weighting = random([batch.batchSize, config.hiddenSize], 1);
      const run = (firstTokenOnly: boolean) => {
        const options = adapterForwardOptions(tensors, { r: 4, alpha: 8, useRslora: false, dropout: 0.3 }, new Dropout("first-token"));
        return tf.variableGrads(() => {
          const hidden = model.encode(batch, options, firstTokenOnly);
          return tf.sum(tf.mul(firstTokenOnly ? hidden : firstRowsOf(hidden, rows), weighting)) as tf.Scalar;
        }, variables);
      };
      const fast = run(true);
      const whole = run(false);
      assertClose(fast.value, whole.value);
      for (const variable of variables) assertClose(fast.grads[variable.name], whole.grads[variable.name]);
      tf.dispose([...variables, fast.value, whole.value, ...Object.values(fast.grads), ...Object.values(whole.grads)]);
      model.dispose();
    });
  }
});
