// Backend selection with and without the BLAS addon, each in its own process (the choice is
// made once per process). TRAINER_BLAS_ADDON pointing at a missing file stands for a machine
// where the addon did not build.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import { loadBlasAddon } from "../../services/trainer/native/blas.ts";

const probe = `
import * as tf from "@tensorflow/tfjs";
import { initBackend } from "./services/trainer/backend.ts";
const lines = [];
const log = { info: (o, m) => lines.push({ level: "info", m }), warn: (o, m) => lines.push({ level: "warn", m, notes: o.notes }) };
try {
  const info = await initBackend(process.env.TRAINER_BACKEND, log);
  await initBackend(process.env.TRAINER_BACKEND, log);
  const a = tf.tensor3d([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], [2, 2, 3]);
  const b = tf.tensor2d([1, 0, 2, -1, 0.5, 3], [2, 3]);
  const product = Array.from(await tf.matMul(a, b, false, true).data());
  console.log(JSON.stringify({ name: info.name, active: tf.getBackend(), product, lines }));
} catch (error) {
  console.log(JSON.stringify({ error: error.message }));
}
`;

function select(backend: string, addonPath?: string) {
  const env: NodeJS.ProcessEnv = { ...process.env, TRAINER_BACKEND: backend };
  if (addonPath === undefined) delete env.TRAINER_BLAS_ADDON;
  else env.TRAINER_BLAS_ADDON = addonPath;
  const child = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", probe], {
    cwd: new URL("../..", import.meta.url),
    env,
    encoding: "utf8",
  });
  assert.equal(child.status, 0, child.stderr);
  return JSON.parse(child.stdout.trim().split("\n").at(-1)!);
}

// a · bᵀ of the probe's operands, row by row.
const aRows = [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]];
const bRows = [[1, 0, 2], [-1, 0.5, 3]];
const expectedProduct = aRows.flatMap((row) => bRows.map((column) => row.reduce((sum, x, i) => sum + x * column[i], 0)));
const addon = loadBlasAddon();
const skipFast = !addon.ok && !process.env.CI ? `BLAS addon not built (${addon.reason}); run scripts/build-native.sh` : false;

describe("backend selection and the BLAS addon", () => {
  it("uses wasm-blas when the addon loads, logging only the choice", { skip: skipFast }, () => {
    const result = select("auto");
    assert.equal(result.name, "wasm-blas");
    assert.equal(result.active, "wasm");
    assert.deepEqual(result.product, expectedProduct);
    assert.deepEqual(result.lines.map((line: { level: string }) => line.level), ["info"]);
  });

  it("falls back to plain wasm when the addon is missing, says so once, and computes the same", () => {
    const result = select("auto", "/nonexistent/blas.node");
    assert.equal(result.name, "wasm");
    assert.deepEqual(result.product, expectedProduct);
    const warnings = result.lines.filter((line: { level: string }) => line.level === "warn");
    assert.equal(warnings.length, 1);
    assert.match(warnings[0].m, /BLAS addon unavailable/);
    assert.match(warnings[0].notes.join(" "), /\/nonexistent\/blas\.node.*build-native\.sh/);
  });

  it("refuses TRAINER_BACKEND=wasm-blas without the addon, naming the cause", () => {
    assert.match(select("wasm-blas", "/nonexistent/blas.node").error, /TRAINER_BACKEND=wasm-blas but .*BLAS addon not loaded/);
  });

  it("keeps plain wasm when TRAINER_BACKEND=wasm even with the addon present", () => {
    const result = select("wasm");
    assert.equal(result.name, "wasm");
    assert.deepEqual(result.product, expectedProduct);
  });
});
