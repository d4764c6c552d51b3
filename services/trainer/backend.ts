// Chooses the TensorFlow.js backend once per process, in the order of ARCHITECTURE.md:
// tensorflow (tfjs-node-gpu / tfjs-node) when it loads, else wasm with its matrix products on
// OpenBLAS (wasm-blas), else plain wasm, else the pure-JS cpu backend.
import { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { loadBlasAddon, registerBlasKernels } from "./native/blas.ts";
import { registerWasmKernels } from "./native/wasm-kernels.ts";

export type BackendName = "tensorflow" | "wasm-blas" | "wasm" | "cpu";
export type BackendChoice = "auto" | BackendName;

export interface BackendInfo {
  name: BackendName;
  /** Why this backend was chosen, or why a faster one was not. */
  notes: string[];
  /** Set when auto selection wanted wasm-blas but the addon did not load. */
  blasUnavailable?: boolean;
}

interface Log {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

const require = createRequire(import.meta.url);
let selected: Promise<BackendInfo> | undefined;

async function tryTensorflow(notes: string[]): Promise<boolean> {
  for (const pkg of ["@tensorflow/tfjs-node-gpu", "@tensorflow/tfjs-node"]) {
    try {
      await import(pkg);
      if (await tf.setBackend("tensorflow")) return true;
      notes.push(`${pkg} loaded but the tensorflow backend did not initialise`);
    } catch (error) {
      notes.push(`${pkg} unavailable: ${firstLine(error)}`);
    }
  }
  return false;
}

async function tryWasm(notes: string[]): Promise<boolean> {
  try {
    const wasm = await import("@tensorflow/tfjs-backend-wasm");
    const distDir = path.dirname(require.resolve("@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm"));
    wasm.setWasmPaths(distDir + path.sep);
    if (await tf.setBackend("wasm")) {
      registerWasmKernels();
      return true;
    }
    notes.push("wasm backend did not initialise");
  } catch (error) {
    notes.push(`wasm backend unavailable: ${firstLine(error)}`);
  }
  return false;
}

/** Routes wasm's matrix products to the BLAS addon; on failure says why in `notes`. */
function tryBlas(notes: string[]): boolean {
  const load = loadBlasAddon();
  if (!load.ok) {
    notes.push(`BLAS addon not loaded from ${load.path} (${load.reason}); build it with scripts/build-native.sh`);
    return false;
  }
  registerBlasKernels(load.addon);
  return true;
}

function firstLine(error: unknown): string {
  return String(error instanceof Error ? error.message : error).split("\n")[0];
}

async function select(choice: BackendChoice): Promise<BackendInfo> {
  const notes: string[] = [];
  if ((choice === "auto" || choice === "tensorflow") && (await tryTensorflow(notes))) {
    return { name: "tensorflow", notes };
  }
  if (choice === "tensorflow") throw new Error(`TRAINER_BACKEND=tensorflow but it cannot load: ${notes.join("; ")}`);
  if ((choice === "auto" || choice === "wasm" || choice === "wasm-blas") && (await tryWasm(notes))) {
    if (choice === "wasm") return { name: "wasm", notes };
    if (tryBlas(notes)) return { name: "wasm-blas", notes };
    if (choice === "wasm-blas") throw new Error(`TRAINER_BACKEND=wasm-blas but ${notes.join("; ")}`);
    return { name: "wasm", notes, blasUnavailable: true };
  }
  if (choice === "wasm" || choice === "wasm-blas") throw new Error(`TRAINER_BACKEND=${choice} but it cannot load: ${notes.join("; ")}`);
  await tf.setBackend("cpu");
  return { name: "cpu", notes };
}

/** Initialises the backend on first call; later calls return the same answer. */
export function initBackend(choice: BackendChoice, log?: Log): Promise<BackendInfo> {
  selected ??= select(choice).then((info) => {
    if (info.blasUnavailable) {
      log?.warn({ backend: info.name, notes: info.notes }, "BLAS addon unavailable: matrix products run on plain wasm, several times slower");
    }
    log?.info({ backend: info.name, notes: info.notes }, `tensorflow.js backend: ${info.name}`);
    return info;
  });
  return selected;
}
