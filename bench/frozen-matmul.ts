// Time of the frozen-linear products (native/quant-matmul.c) at TinyLlama-1.1B's linear shapes,
// m = 1024 tokens, for each storage (F32, BF16, F16, int8, NF4) as a multiple of plain cblas_sgemm on the
// float32 weight (the F32 storage calls sgemm directly). Forward out = x·Wᵀ and the input gradient
// dx = dy·W. With --baseline-addon, another build of the addon (e.g. an older commit's) runs the
// same products in the same rounds, for a before/after comparison. Storages alternate within each
// round. Times are the process's CPU time (user + system), which other processes on a shared machine
// disturb far less than wall time; run with one BLAS thread so that CPU time is the work done, not
// threads spinning while they wait:
//   OPENBLAS_NUM_THREADS=1 node --import tsx bench/frozen-matmul.ts [--rounds 5] [--m 1024] [--baseline-addon PATH]
import { parseArgs } from "node:util";
import { initBackend } from "../services/trainer/backend.ts";
import { loadBlasAddon } from "../services/trainer/native/blas.ts";
import { FrozenLinear, requireFrozenStorage, type FrozenLinearAddon, type SourceDtype } from "../services/trainer/native/frozen-linear.ts";
import { serializeSafetensors } from "../services/trainer/safetensors.ts";
import { Rng } from "../services/trainer/rng.ts";

const { values: options } = parseArgs({
  options: { rounds: { type: "string", default: "5" }, m: { type: "string", default: "1024" }, "baseline-addon": { type: "string" } },
});
const rounds = Number(options.rounds);
const m = Number(options.m);
// [out, in] of q/o_proj, k/v_proj, gate/up_proj, down_proj.
const SHAPES: [number, number][] = [[2048, 2048], [256, 2048], [5632, 2048], [2048, 5632]];
const STORAGES = ["F32", "BF16", "F16", "int8", "nf4"] as const;
// frozenCreate's codes (frozen-linear.ts): source dtype F32 0 / BF16 1 / F16 2; mode keep 0 / int8 3 / nf4 4.
const CREATE: Record<(typeof STORAGES)[number], { dtype: SourceDtype; mode: number }> = {
  F32: { dtype: "F32", mode: 0 }, BF16: { dtype: "BF16", mode: 0 }, F16: { dtype: "F16", mode: 0 }, int8: { dtype: "F32", mode: 3 }, nf4: { dtype: "F32", mode: 4 },
};
const SOURCE_CODE: Record<SourceDtype, number> = { F32: 0, BF16: 1, F16: 2 };

function bytesOf(values: Float32Array, shape: number[], dtype: SourceDtype): Uint8Array {
  const file = serializeSafetensors(new Map([["w", { shape, data: values }]]), dtype);
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  return file.subarray(8 + headerLength);
}

await initBackend("wasm-blas");
const builds: { name: string; addon: FrozenLinearAddon }[] = [{ name: "", addon: requireFrozenStorage("nf4") }];
if (options["baseline-addon"]) {
  const load = loadBlasAddon(options["baseline-addon"]);
  if (!load.ok) throw new Error(`baseline addon: ${load.reason}`);
  builds.unshift({ name: "baseline ", addon: load.addon as FrozenLinearAddon });
}
const rng = new Rng(7);
console.log(`m ${m}, median of ${rounds} rounds; CPU ms per product and ÷ F32 sgemm; BLAS threads ${process.env.OPENBLAS_NUM_THREADS ?? "default"}`);
console.log(`${"W [out, in]".padEnd(22)} ${"product".padEnd(6)} ${STORAGES.map((s) => s.padStart(15)).join(" ")}`);
for (const shape of SHAPES) {
  const [out, inFeatures] = shape;
  const values = rng.fill(out * inFeatures, (r) => r.normal(0, 0.02));
  const weights = builds.map(({ addon }) =>
    STORAGES.map((storage) => {
      const { dtype, mode } = CREATE[storage];
      return new FrozenLinear(addon, addon.frozenCreate(bytesOf(values, shape, dtype), SOURCE_CODE[dtype], out, inFeatures, mode, false), out, inFeatures, storage);
    }),
  );
  for (const transposed of [false, true]) {
    const input = rng.fill(m * (transposed ? out : inFeatures), (r) => r.normal(0, 1));
    const result = new Float32Array(m * (transposed ? inFeatures : out));
    const times = weights.map((row) => row.map((): number[] => []));
    for (const row of weights) for (const weight of row) weight.matmul(input, result, m, transposed);
    for (let round = 0; round < rounds; round++) {
      weights.forEach((row, b) =>
        row.forEach((weight, i) => {
          const start = process.cpuUsage();
          weight.matmul(input, result, m, transposed);
          const { user, system } = process.cpuUsage(start);
          times[b][i].push((user + system) / 1000);
        }),
      );
    }
    builds.forEach(({ name }, b) => {
      const medians = times[b].map((t) => [...t].sort((x, y) => x - y)[Math.floor(t.length / 2)]);
      const cells = medians.map((ms) => `${ms.toFixed(1)} (${(ms / medians[0]).toFixed(2)}×)`.padStart(15));
      console.log(`${`${name}${out}×${inFeatures}`.padEnd(22)} ${(transposed ? "dy·W" : "x·Wᵀ").padEnd(6)} ${cells.join(" ")}`);
    });
  }
  for (const row of weights) for (const weight of row) weight.dispose();
}
