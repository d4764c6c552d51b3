import assert from "node:assert/strict";
import { before, test } from "node:test";
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../../services/trainer/backend.ts";
import { crossEntropy } from "../../services/trainer/losses.ts";
import { adapterForwardOptions, headKey, loraKey, loraScale, matchTargetModules } from "../../services/trainer/lora.ts";
import { resolveJobSettings } from "../../services/trainer/settings.ts";
import { Dropout, loraLinear } from "../../services/trainer/layers/lora-forward.ts";
import { encoderLinearModules, initEncoderLora } from "../../services/trainer/tasks/classification/encoder.ts";
import { initialHead, loadPretrained } from "../../services/trainer/tasks/classification/load.ts";
import { Rng } from "../../services/trainer/rng.ts";
import { engineFixtures, fixtureModel } from "../helpers/engine-fixtures.ts";

before(async () => {
  await initBackend("wasm");
  await engineFixtures();
});

test("LoRA linear equals W x + b + (alpha/r) B A x", () => {
  const rng = new Rng(3);
  const [n, inF, outF, r, alpha] = [3, 5, 4, 2, 6];
  const draw = (count: number) => Array.from({ length: count }, () => rng.normal());
  const x = draw(n * inF), w = draw(outF * inF), b = draw(outF), a = draw(r * inF), bb = draw(outF * r);
  const scale = loraScale({ r, alpha, useRslora: false });
  assert.equal(scale, 3);
  const got = tf.tidy(() =>
    loraLinear(tf.tensor2d(x, [n, inF]), tf.tensor2d(w, [outF, inF]), tf.tensor1d(b), { a: tf.tensor2d(a, [r, inF]), b: tf.tensor2d(bb, [outF, r]), scale, dropout: 0 }).arraySync(),
  );
  for (let row = 0; row < n; row++) {
    for (let o = 0; o < outF; o++) {
      let expected = b[o];
      for (let j = 0; j < inF; j++) expected += w[o * inF + j] * x[row * inF + j];
      for (let k = 0; k < r; k++) {
        let ax = 0;
        for (let j = 0; j < inF; j++) ax += a[k * inF + j] * x[row * inF + j];
        expected += scale * bb[o * r + k] * ax;
      }
      assert.ok(Math.abs(got[row][o] - expected) < 1e-5, `row ${row} out ${o}: ${got[row][o]} vs ${expected}`);
    }
  }
});

test("rsLoRA scales by alpha / sqrt(r)", () => {
  assert.equal(loraScale({ r: 16, alpha: 8, useRslora: true }), 2);
  assert.equal(loraScale({ r: 16, alpha: 8, useRslora: false }), 0.5);
});

test("target modules match by full name or dotted suffix, as PEFT does", () => {
  const modules = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.key", "x.subquery"];
  assert.deepEqual(matchTargetModules(modules, ["query"]), ["bert.encoder.layer.0.attention.self.query"]);
  assert.deepEqual(matchTargetModules(modules, ["self.key"]), ["bert.encoder.layer.0.attention.self.key"]);
  assert.deepEqual(matchTargetModules(modules, ["x.subquery"]), ["x.subquery"]);
});

for (const name of ["distilbert-cls", "bert-cls", "roberta-cls"]) {
  test(`${name}: an untrained adapter (B = 0) reproduces the base logits bit for bit`, async () => {
    const { model, tokenizer, config, checkpointHead } = await loadPretrained(fixtureModel(name));
    const settings = resolveJobSettings({ lora: { r: 4, alpha: 8, dropout: 0.1 } }, config.architecture).lora;
    const lora = initEncoderLora(model, settings, 11);
    assert.equal(lora.size, 2 * config.numLayers, "default targets: two projections per layer");
    const tensors = new Map<string, tf.Tensor>();
    for (const [module, { a, b }] of lora) {
      const [, inFeatures] = model.linearShape(module)!;
      const bound = 1 / Math.sqrt(inFeatures);
      assert.ok(a.data.every((v) => Math.abs(v) <= bound) && a.data.some((v) => v !== 0), "A is Kaiming-uniform(a=sqrt 5)");
      assert.ok(b.data.every((v) => v === 0), "B starts at zero");
      tensors.set(loraKey(module, "A"), tf.tensor(a.data, a.shape));
      tensors.set(loraKey(module, "B"), tf.tensor(b.data, b.shape));
    }
    for (const [param, { data, shape }] of checkpointHead) tensors.set(headKey(param), tf.tensor(data, shape));
    const batch = tokenizer.pad(["the movie was great!", "terrible, boring film", "中文"].map((t) => tokenizer.encode(t, 32)));
    const withAdapter = adapterForwardOptions(tensors, settings);
    const base = adapterForwardOptions(new Map([...tensors].filter(([key]) => !key.includes("lora_"))), settings);
    const adapted = tf.tidy(() => model.logits(batch, withAdapter).dataSync().slice());
    const plain = tf.tidy(() => model.logits(batch, base).dataSync().slice());
    assert.deepEqual([...adapted], [...plain]);
  });
}

test("gradients of LoRA and head parameters match central finite differences", async () => {
  const pretrained = await loadPretrained(fixtureModel("distilbert-base"));
  const { model, tokenizer } = pretrained;
  const settings = resolveJobSettings({ lora: { r: 2, alpha: 4, dropout: 0.2, targetModules: ["q_lin", "v_lin", "lin1"] } }, "distilbert").lora;
  const rng = new Rng(5);
  const params = new Map<string, tf.Variable>();
  for (const [module, { a, b }] of initEncoderLora(model, settings, 2)) {
    params.set(loraKey(module, "A"), tf.variable(tf.tensor(a.data, a.shape)));
    // A non-zero B so that gradients reach A too.
    params.set(loraKey(module, "B"), tf.variable(tf.tensor(rng.fill(b.data.length, (r) => r.normal(0, 0.3)), b.shape)));
  }
  for (const [name, { data, shape }] of initialHead(pretrained, 3, 2)) params.set(headKey(name), tf.variable(tf.tensor(data, shape)));
  const batch = tokenizer.pad(["the movie was great", "bad film and boring", "i love it"].map((t) => tokenizer.encode(t, 16)));
  const labels = [2, 0, 1];
  // A fixed dropout seed replays the same masks on every evaluation, so dropout is part of the checked function.
  const loss = () => tf.tidy(() => crossEntropy(model.logits(batch, adapterForwardOptions(params, settings, new Dropout("fd"))), labels));
  const names = [...params.keys()];
  const { grads } = tf.variableGrads(loss, [...params.values()]);
  const gradOf = new Map(names.map((key) => [key, grads[params.get(key)!.name].dataSync().slice()]));
  const checked = [
    loraKey("distilbert.transformer.layer.0.attention.q_lin", "A"),
    loraKey("distilbert.transformer.layer.1.attention.v_lin", "B"),
    loraKey("distilbert.transformer.layer.0.ffn.lin1", "A"),
    headKey("pre_classifier.weight"),
    headKey("classifier.bias"),
  ];
  // Small enough that no ReLU of the pre_classifier changes side, large enough to stay above float32 noise.
  const eps = 3e-3;
  let compared = 0;
  for (const key of checked) {
    const variable = params.get(key)!;
    const values = variable.dataSync().slice();
    const gradient = gradOf.get(key)!;
    // The three largest-gradient coordinates: there the difference quotient is far above float32 noise.
    const coordinates = [...gradient.keys()].sort((i, j) => Math.abs(gradient[j]) - Math.abs(gradient[i])).slice(0, 3);
    for (const index of coordinates) {
      const at = (delta: number) => {
        const shifted = values.slice();
        shifted[index] += delta;
        variable.assign(tf.tensor(shifted, variable.shape));
        return loss().dataSync()[0];
      };
      const numeric = (at(eps) - at(-eps)) / (2 * eps);
      variable.assign(tf.tensor(values, variable.shape));
      assert.ok(Math.abs(numeric - gradient[index]) <= 2e-4 + 0.02 * Math.abs(gradient[index]), `${key}[${index}]: analytic ${gradient[index]} vs numeric ${numeric}`);
      compared++;
    }
  }
  assert.equal(compared, 15);
  assert.equal(encoderLinearModules(model.config).length, 12);
});
