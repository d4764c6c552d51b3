// Early stopping, judged at each evaluation: the best value of the watched validation metric so far,
// where it was reached, and how many evaluations since have not improved on it by minDelta. Its state
// travels in trainer_state.json, so a resumed run judges exactly as the run that never stopped.
import { LOWER_IS_BETTER, TrainingConfigError, type EarlyStopping } from "./settings.ts";

export interface EarlyStoppingState {
  bestStep: number;
  bestValue: number;
  /** Evaluations since the best one that did not improve on it. */
  stale: number;
}

export class EarlyStopper {
  constructor(
    readonly config: EarlyStopping,
    public state: EarlyStoppingState | undefined,
  ) {}

  /** Judges the evaluation at `step`: a new best (improved), and whether patience has run out (stop). */
  observe(step: number, metrics: Record<string, number>): { improved: boolean; stop: boolean } {
    const { metric, minDelta, patience } = this.config;
    const value = metrics[metric];
    if (value === undefined) throw new TrainingConfigError(`earlyStopping.metric ${metric} is not a validation metric of this task; it has ${Object.keys(metrics).join(", ")}`);
    const best = this.state;
    const improved = !best || (LOWER_IS_BETTER.includes(metric) ? value < best.bestValue - minDelta : value > best.bestValue + minDelta);
    this.state = improved ? { bestStep: step, bestValue: value, stale: 0 } : { ...best!, stale: best!.stale + 1 };
    return { improved, stop: this.state.stale >= patience };
  }

  /** What metrics.json says about it. */
  summary(stoppedAtStep: number | null, adapterStep: number) {
    return { ...this.config, best_step: this.state?.bestStep ?? null, best_value: this.state?.bestValue ?? null, stopped_at_step: stoppedAtStep, adapter_step: adapterStep };
  }
}
