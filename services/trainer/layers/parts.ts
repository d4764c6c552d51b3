// Names the part of a model (attention, layer norm, loss…) that the kernels running now belong to, so a
// profiler (bench:train --profile) can break a step's time down by layer part, forward and backward.
// One assignment per block when nobody reads it.
let current = "other";

export function currentPart(): string {
  return current;
}

/** Runs `run` with its kernels counted under `name`; nested parts count under the innermost. */
export function inPart<T>(name: string, run: () => T): T {
  const previous = current;
  current = name;
  try {
    return run();
  } finally {
    current = previous;
  }
}
