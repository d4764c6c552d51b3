// GFLOP/s of each matrix-product form a DistilBERT-shaped training step uses (batch 8 × 128
// tokens, d 768, 12 heads, FFN 3072, LoRA r 16), on tfjs's plain wasm kernel and on the BLAS
// addon, in one process. Run: node --import tsx bench/matmul.ts
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "../services/trainer/backend.ts";
import { loadBlasAddon, registerBlasKernels } from "../services/trainer/native/blas.ts";

interface Form {
  name: string;
  a: number[];
  b: number[];
  transposeA?: boolean;
  transposeB?: boolean;
}

const rows = 8 * 128;
export const forms: Form[] = [
  { name: "x·W (dense forward)", a: [rows, 768], b: [768, 768] },
  { name: "g·Wᵀ (dense, input gradient)", a: [rows, 768], b: [768, 768], transposeB: true },
  { name: "xᵀ·g (dense, weight gradient)", a: [rows, 768], b: [rows, 768], transposeA: true },
  { name: "x·W (FFN up)", a: [rows, 768], b: [768, 3072] },
  { name: "batched x·W, W broadcast", a: [8, 128, 768], b: [768, 768] },
  { name: "q·kᵀ (attention scores)", a: [96, 128, 64], b: [96, 128, 64], transposeB: true },
  { name: "p·v (attention mix)", a: [96, 128, 128], b: [96, 128, 64] },
  { name: "pᵀ·g (attention, v gradient)", a: [96, 128, 128], b: [96, 128, 64], transposeA: true },
  { name: "x·A (LoRA down, r 16)", a: [rows, 768], b: [768, 16] },
  { name: "xᵀ·g (LoRA A gradient)", a: [rows, 768], b: [rows, 16], transposeA: true },
];

function flops({ a, b, transposeA, transposeB }: Form): number {
  const batch = tf.util.sizeFromShape(tf.broadcast_util.assertAndGetBroadcastShape(a.slice(0, -2), b.slice(0, -2)));
  const [m, k] = transposeA ? [a.at(-1)!, a.at(-2)!] : [a.at(-2)!, a.at(-1)!];
  const n = transposeB ? b.at(-2)! : b.at(-1)!;
  return 2 * batch * m * n * k;
}

/** Seconds per product: one warm-up, then repeats until about `budget` seconds have passed. */
async function time(form: Form, budget: number): Promise<number> {
  const a = tf.randomNormal(form.a);
  const b = tf.randomNormal(form.b);
  // wasm kernels run synchronously: disposing the result is enough; reading it back would time a copy.
  const run = () => tf.matMul(a, b, form.transposeA, form.transposeB).dispose();
  run();
  let repeats = 0;
  const start = performance.now();
  while (repeats === 0 || performance.now() - start < budget * 1000) {
    run();
    repeats++;
  }
  tf.dispose([a, b]);
  return (performance.now() - start) / 1000 / repeats;
}

export async function matmulTable(budget = 0.5): Promise<string> {
  await initBackend("wasm");
  const load = loadBlasAddon();
  const lines = [`${"form".padEnd(34)} ${"shapes".padEnd(34)} ${"wasm".padStart(8)} ${"wasm-blas".padStart(10)}  GFLOP/s`];
  for (const form of forms) {
    const plain = flops(form) / (await time(form, budget)) / 1e9;
    let blas = "n/a";
    if (load.ok) {
      const restore = registerBlasKernels(load.addon);
      blas = (flops(form) / (await time(form, budget)) / 1e9).toFixed(1);
      restore();
    }
    const shapes = `[${form.a}]${form.transposeA ? "ᵀ" : ""}·[${form.b}]${form.transposeB ? "ᵀ" : ""}`;
    lines.push(`${form.name.padEnd(34)} ${shapes.padEnd(34)} ${plain.toFixed(1).padStart(8)} ${blas.padStart(10)}`);
  }
  if (!load.ok) lines.push(`(BLAS addon not loaded: ${load.reason})`);
  return lines.join("\n");
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(await matmulTable());
}
