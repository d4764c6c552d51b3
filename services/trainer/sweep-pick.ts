// The adapter size search's decision, shared by the API's sweeps and the engine CLI's `sweep`, and a
// pure function so its edges can be tested with forged numbers: among the configurations that finished
// with the metric, the smallest adapter whose metric is within `tolerance` (relative) of the best one,
// and the reason in words.

export interface SweepCandidate {
  jobId: string;
  rank: number;
  targetModules: string[];
  /** What "smallest" compares: trainable parameters, else adapter bytes when the count is unknown. */
  size: number;
  /** The validation metric; undefined when the job did not succeed or did not report it. */
  value: number | undefined;
}

export interface SweepPick {
  jobId: string;
  bestJobId: string;
  best: number;
  value: number;
  reason: string;
}

/**
 * Floating point slack: 0.9 − 1 % of 0.9 is not exactly 0.891 in binary, and a value the user
 * computed as "exactly 1 % worse" must count as within 1 %.
 */
const RELATIVE_SLACK = 1e-9;

const describe = (candidate: SweepCandidate) => `rank ${candidate.rank} on ${candidate.targetModules.join(",")}`;
const formatNumber = (value: number) => Number(value.toPrecision(4)).toString();
const percent = (fraction: number) => `${formatNumber(fraction * 100)} %`;

/** How far `value` trails `best`, as a fraction of |best| (0 for the best itself, negative never). */
export function relativeGap(value: number, best: number, higherIsBetter: boolean): number {
  const behind = higherIsBetter ? best - value : value - best;
  if (behind <= 0) return 0;
  return best === 0 ? Infinity : behind / Math.abs(best);
}

export function pickSmallestWithinTolerance(candidates: SweepCandidate[], metric: string, higherIsBetter: boolean, tolerance: number): SweepPick | undefined {
  const measured = candidates.filter((candidate): candidate is SweepCandidate & { value: number } => candidate.value !== undefined && Number.isFinite(candidate.value));
  if (measured.length === 0) return undefined;
  const better = (a: number, b: number) => (higherIsBetter ? a > b : a < b);
  // Ties on the metric go to the smaller adapter, so the best is itself the smallest of its equals.
  const best = measured.reduce((champion, candidate) =>
    better(candidate.value, champion.value) || (candidate.value === champion.value && candidate.size < champion.size) ? candidate : champion,
  );
  const within = measured.filter((candidate) => relativeGap(candidate.value, best.value, higherIsBetter) <= tolerance * (1 + RELATIVE_SLACK));
  const pick = within.reduce((smallest, candidate) =>
    candidate.size < smallest.size || (candidate.size === smallest.size && better(candidate.value, smallest.value)) ? candidate : smallest,
  );
  const direction = higherIsBetter ? "higher is better" : "lower is better";
  const excluded = candidates.length - measured.length;
  const unmeasured = excluded > 0 ? ` ${excluded} configuration${excluded === 1 ? "" : "s"} without a ${metric} (failed or cancelled) were left out.` : "";
  const reason =
    pick === best
      ? `${describe(pick)} has the best ${metric}, ${formatNumber(pick.value)} (${direction}), and no smaller adapter is within ${percent(tolerance)} of it.${unmeasured}`
      : `${describe(pick)} is the smallest adapter whose ${metric}, ${formatNumber(pick.value)}, is within ${percent(tolerance)} of the best, ` +
        `${formatNumber(best.value)} (${describe(best)}; ${direction}): ${percent(relativeGap(pick.value, best.value, higherIsBetter))} behind, ` +
        `with ${formatNumber(pick.size)} trainable parameters against ${formatNumber(best.size)}.${unmeasured}`;
  return { jobId: pick.jobId, bestJobId: best.jobId, best: best.value, value: pick.value, reason };
}
