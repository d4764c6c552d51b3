// bench:train --profile: where a training step's time goes. Every kernel of the active backend is
// wrapped with a timer; each call is counted under its kernel name and under its phase (forward,
// backward: tfjs's gradient scopes; update: the optimizer and everything else) × layer part (the
// innermost inPart label of services/trainer/layers/parts.ts). Time outside kernels (JS glue, tape
// bookkeeping) shows as the gap between the kernel total and the step time.
import * as tf from "@tensorflow/tfjs";
import { currentPart } from "../services/trainer/layers/parts.ts";

interface Tally {
  ms: number;
  calls: number;
}

function phase(): string {
  const scopes = tf.engine().state.scopeStack;
  for (let i = scopes.length - 1; i >= 0; i--) {
    if (scopes[i].name === "backward") return "backward";
    if (scopes[i].name === "forward") return "forward";
  }
  return "update";
}

function table(title: string, rows: [string, Tally][], stepCount: number, all: number, limit: number): string[] {
  const lines = [title];
  for (const [name, e] of rows.sort((a, b) => b[1].ms - a[1].ms).slice(0, limit)) {
    const perStep = (e.ms / stepCount).toFixed(1).padStart(8);
    const calls = String(Math.round(e.calls / stepCount)).padStart(6);
    lines.push(`  ${name.padEnd(34)} ${perStep} ms ${calls} calls ${((100 * e.ms) / all).toFixed(1).padStart(5)}%`);
  }
  return lines;
}

/** Installs the timers on the active backend; `report` prints ms per step by kernel and by phase × part. */
export function profileKernels(backendName: string) {
  const byKernel = new Map<string, Tally>();
  const byPart = new Map<string, Tally>();
  let depth = 0;
  for (const config of tf.getKernelsForBackend(backendName)) {
    const inner = config.kernelFunc;
    const entry: Tally = { ms: 0, calls: 0 };
    byKernel.set(config.kernelName, entry);
    tf.unregisterKernel(config.kernelName, backendName);
    tf.registerKernel({
      ...config,
      setupFunc: undefined,
      kernelFunc: (args) => {
        // A kernel calling another (fused kernels do) is timed once, by the outer one.
        if (depth > 0) return inner(args);
        depth++;
        const start = performance.now();
        try {
          return inner(args);
        } finally {
          const ms = performance.now() - start;
          depth--;
          entry.ms += ms;
          entry.calls++;
          const key = `${phase()} · ${currentPart()}`;
          const part = byPart.get(key) ?? { ms: 0, calls: 0 };
          part.ms += ms;
          part.calls++;
          byPart.set(key, part);
        }
      },
    });
  }
  return {
    reset: () => {
      byKernel.forEach((entry) => Object.assign(entry, { ms: 0, calls: 0 }));
      byPart.clear();
    },
    report: (stepCount: number, stepMs: number) => {
      const kernels = [...byKernel].filter(([, e]) => e.calls > 0);
      const all = kernels.reduce((sum, [, e]) => sum + e.ms, 0);
      const head = `profile over ${stepCount} steady steps: step ${stepMs.toFixed(0)} ms, kernels ${(all / stepCount).toFixed(0)} ms, outside kernels ${(stepMs - all / stepCount).toFixed(0)} ms`;
      return [
        head,
        ...table(" by phase · layer part (ms per step)", [...byPart], stepCount, all, 40),
        ...table(" by kernel (ms per step)", kernels, stepCount, all, 20),
      ].join("\n");
    },
  };
}
