// Messages between the worker's main thread and a training sandbox thread. Stop requests
// travel through shared memory instead, so the engine sees them even while the sandbox's
// event loop is busy with a training step.
import type { Config } from "../common/config.ts";
import type { EvaluationReport, StepReport, TrainOptions, TrainResult } from "../trainer/index.ts";

/** The configuration the sandbox's engine runs with: its backend, BLAS addon and base-model cache. */
export type EngineConfig = Pick<Config, "trainerBackend" | "trainerBlasAddon" | "modelCacheSize">;

export interface SandboxInit {
  engine: EngineConfig;
  /** Int32Array over this buffer; slot 0 holds a StopSignal. */
  control: SharedArrayBuffer;
}

export const StopSignal = { none: 0, cancel: 1, checkpoint: 2 } as const;
export type StopKind = "cancel" | "checkpoint";

export type ToSandbox =
  | { type: "train"; options: TrainOptions }
  | { type: "checkpoint-saved"; step: number };

export type FromSandbox =
  | { type: "step"; report: StepReport }
  | { type: "evaluation"; report: EvaluationReport }
  | { type: "checkpoint"; step: number; dir: string }
  | { type: "done"; result: TrainResult }
  | { type: "failed"; name: string; message: string; stack?: string };
