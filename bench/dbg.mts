import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../services/trainer/backend.ts";
import { loadPretrained } from "../services/trainer/model/load.ts";
import { train } from "../services/trainer/train.ts";
const mb = (x: number) => (x / 1048576).toFixed(0);
const show = (label: string) => {
  const heap = (tf.backend() as any).wasm?.HEAPU8.length ?? 0;
  const m = process.memoryUsage();
  console.log(label.padEnd(20), "rss", mb(m.rss), "maxrss", (process.resourceUsage().maxRSS / 1024).toFixed(0), "wasmheap", mb(heap), "jsheap", mb(m.heapUsed), "external", mb(m.external), "arrayBuffers", mb(m.arrayBuffers), "tensors", tf.memory().numTensors, "bytes", mb(tf.memory().numBytes));
};
await initBackend("wasm-blas");
show("init");
const dir = "/tmp/lora-bench-distilbert-L2-b8x128-s3";
if (process.argv[2] === "load") { const p = await loadPretrained(dir); show("loaded"); global.gc?.(); show("gc"); process.exit(0); }
let n = 0;
await train({ modelDir: dir, trainFile: dir + "/train.jsonl", outDir: "/tmp/dbg-adapter", lora: { r: 16, alpha: 32, dropout: 0, targetModules: ["q_lin", "v_lin"] },
  hyper: { epochs: 1, batchSize: 8, learningRate: 5e-4, warmupRatio: 0, weightDecay: 0.01, maxSeqLength: 128, seed: 1, maxSteps: 3, maxGradNorm: 0 } },
  { onStep: () => show("step " + ++n) });
show("end");
