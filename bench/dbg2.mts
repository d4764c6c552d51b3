import * as tf from "@tensorflow/tfjs";
import { readFile } from "node:fs/promises";
import { initBackend } from "../services/trainer/backend.ts";
import { loadPretrained, initialHead } from "../services/trainer/model/load.ts";
import { initLora, loraKey, headKey, adapterForwardOptions, resolveLora } from "../services/trainer/lora.ts";
import { crossEntropy } from "../services/trainer/inference.ts";
import { encodeExamples } from "../services/trainer/data/classification.ts";
const mb = (x: number) => (x / 1048576).toFixed(0);
await initBackend((process.env.B ?? "wasm-blas") as any);
const dir = "/tmp/lora-bench-distilbert-L2-b8x128-s3";
const pre = await loadPretrained(dir);
const settings = resolveLora({ r: 16, alpha: 32, dropout: 0 }, "distilbert");
const params = new Map<string, tf.Variable>();
for (const [m, { a, b }] of initLora(pre.model, settings, 1)) { params.set(loraKey(m, "A"), tf.variable(tf.tensor(a.data, a.shape))); params.set(loraKey(m, "B"), tf.variable(tf.tensor(b.data, b.shape))); }
for (const [n, { shape, data }] of initialHead(pre, 2, 1)) params.set(headKey(n), tf.variable(tf.tensor(data, shape)));
const records = (await readFile(dir + "/train.jsonl", "utf8")).trim().split("\n").map((l) => JSON.parse(l));
const ex = encodeExamples(records.slice(0, 8), pre.tokenizer, 128, ["negative", "positive"]);
const batch = pre.tokenizer.pad(ex);
for (let i = 0; i < 2; i++) {
  const before = tf.memory().numBytes;
  const info = await tf.profile(() => {
    const { value, grads } = tf.variableGrads(() => crossEntropy(pre.model.logits(batch, adapterForwardOptions(params, settings)), ex.map((e) => e.label)), [...params.values()]);
    value.dispose(); tf.dispose(Object.values(grads));
  });
  console.log("peakBytes", mb(info.peakBytes), "newBytes", mb(info.newBytes), "base", mb(before), "heap", mb((tf.backend() as any).wasm.HEAPU8.length), "kernels", info.kernels.length);
  if (i === 1 && process.env.FWD) {
    const fwd = await tf.profile(() => { tf.tidy(() => crossEntropy(pre.model.logits(batch, adapterForwardOptions(params, settings)), ex.map((e) => e.label))); });
    console.log("forward only peak", mb(fwd.peakBytes));
  }
}
