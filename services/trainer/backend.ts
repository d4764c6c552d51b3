// Chooses the TensorFlow.js backend once per process (or worker thread), as the entry point asks, in
// the order of docs/architecture.md: tensorflow (tfjs-node-gpu / tfjs-node) when it loads, else wasm
// with its matrix products on OpenBLAS (wasm-blas), else plain wasm, else the pure-JS cpu backend.
import { createRequire } from "node:module";
import path from "node:path";
import * as tf from "@tensorflow/tfjs";
import { loadBlasAddon, registerBlasKernels } from "./native/blas.ts";
import { registerWasmKernels } from "./native/wasm-kernels.ts";

import type { BackendChoice } from "../common/config.ts";

export type { BackendChoice };
export type BackendName = Exclude<BackendChoice, "auto">;

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

export interface BackendOptions {
  log?: Log;
  /** The OpenBLAS addon to load instead of the one scripts/build-native.sh builds (TRAINER_BLAS_ADDON). */
  blasAddonPath?: string;
}

const require = createRequire(import.meta.url);
let selected: { choice: BackendChoice; info: Promise<BackendInfo> } | undefined;

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
function tryBlas(notes: string[], addonPath: string | undefined): boolean {
  const load = loadBlasAddon(addonPath);
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

async function select(choice: BackendChoice, blasAddonPath: string | undefined): Promise<BackendInfo> {
  const notes: string[] = [];
  if ((choice === "auto" || choice === "tensorflow") && (await tryTensorflow(notes))) {
    return { name: "tensorflow", notes };
  }
  if (choice === "tensorflow") throw new Error(`TRAINER_BACKEND=tensorflow but it cannot load: ${notes.join("; ")}`);
  if ((choice === "auto" || choice === "wasm" || choice === "wasm-blas") && (await tryWasm(notes))) {
    if (choice === "wasm") return { name: "wasm", notes };
    if (tryBlas(notes, blasAddonPath)) return { name: "wasm-blas", notes };
    if (choice === "wasm-blas") throw new Error(`TRAINER_BACKEND=wasm-blas but ${notes.join("; ")}`);
    return { name: "wasm", notes, blasUnavailable: true };
  }
  if (choice === "wasm" || choice === "wasm-blas") throw new Error(`TRAINER_BACKEND=${choice} but it cannot load: ${notes.join("; ")}`);
  await tf.setBackend("cpu");
  return { name: "cpu", notes };
}

export class BackendConflictError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BackendConflictError";
  }
}

/**
 * Initialises the backend on the first call. A process has one backend: a later call asking for the
 * same choice, or naming the backend that was selected, gets the same answer; any other choice throws
 * BackendConflictError rather than being silently ignored.
 */
export async function initBackend(choice: BackendChoice, options: BackendOptions = {}): Promise<BackendInfo> {
  if (selected) {
    const info = await selected.info;
    if (choice !== selected.choice && choice !== info.name) {
      throw new BackendConflictError(`the tensorflow.js backend was already initialised as ${info.name} (asked for ${selected.choice}); it cannot be changed to ${choice} in this process`);
    }
    return info;
  }
  const { log, blasAddonPath } = options;
  const info = select(choice, blasAddonPath).then((chosen) => {
    if (chosen.blasUnavailable) {
      log?.warn({ backend: chosen.name, notes: chosen.notes }, "BLAS addon unavailable: matrix products run on plain wasm, several times slower");
    }
    log?.info({ backend: chosen.name, notes: chosen.notes }, `tensorflow.js backend: ${chosen.name}`);
    return chosen;
  });
  selected = { choice, info };
  return info;
}

/** The backend an entry point initialised; the engine's train() and services run on it. */
export function selectedBackend(): Promise<BackendInfo> {
  if (!selected) return Promise.reject(new Error("no tensorflow.js backend: the entry point must call initBackend first"));
  return selected.info;
}
