// What Job.progress holds, declared once: the worker writes exactly these fields and the API's
// Job schema serializes exactly these, so a field added here reaches clients without a second edit.

export const JOB_PROGRESS_FIELDS = {
  step: { type: "integer", description: "optimizer steps done" },
  totalSteps: { type: "integer", description: "optimizer steps the job will run" },
  percent: { type: "number", description: "step / totalSteps, in percent with one decimal" },
  epoch: { type: "number", description: "epochs done, fractional" },
  loss: { type: "number", description: "training loss of the latest step" },
  learningRate: { type: "number", description: "learning rate of the latest step" },
  tokens: { type: "integer", description: "training tokens seen so far" },
  tokensPerSecond: { type: "integer", description: "training throughput of this attempt" },
  elapsedMs: { type: "integer", description: "training time of this attempt" },
  etaMs: { type: "integer", description: "estimated time to the last step" },
  adapterStep: { type: "integer", description: "once succeeded: the step whose weights the adapter holds (early stopping's best evaluation, else the last step)" },
} as const;

/** Every field is written with each step report, except adapterStep, written once the job succeeded. */
export type JobProgress = { [field in Exclude<keyof typeof JOB_PROGRESS_FIELDS, "adapterStep">]: number } & { adapterStep?: number };

export const jobProgressSchema = {
  type: "object",
  description: "the latest training step; empty until the first step is reported",
  properties: JOB_PROGRESS_FIELDS,
} as const;
