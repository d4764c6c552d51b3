// Training entry point: resolves the job's settings from their declaration (settings.ts), builds the
// task the base model calls for (tasks/classification, tasks/causal-lm) and runs the shared loop;
// a composition (options.composition) composes and evaluates adapters instead (compose-job.ts).
import { selectedBackend } from "./backend.ts";
import { runComposition } from "./compose-job.ts";
import { readModelConfigJson } from "./hf/config.ts";
import { runTraining, type TrainHooks, type TrainOptions, type TrainResult } from "./loop.ts";
import { resolveJobSettings, TrainingConfigError } from "./settings.ts";
import { causalFamilyOf } from "./tasks/causal-lm/config.ts";
import { causalTask } from "./tasks/causal-lm/task.ts";
import { parseEncoderConfig } from "./tasks/classification/config.ts";
import { classificationTask } from "./tasks/classification/task.ts";

/** Trains on the backend the entry point initialised (initBackend). */
export async function train(options: TrainOptions, hooks: TrainHooks = {}): Promise<TrainResult> {
  const backend = await selectedBackend();
  if (options.composition) {
    return runComposition({ ...options.composition, modelDir: options.modelDir, outDir: options.outDir, baseModelName: options.baseModelName, modelCacheSize: options.modelCacheSize }, hooks);
  }
  const raw = await readModelConfigJson(options.modelDir);
  const causal = causalFamilyOf(raw);
  const settings = resolveJobSettings({ lora: options.lora, hyperparameters: options.hyper }, causal ?? parseEncoderConfig(raw).architecture);
  if (settings.hyperparameters.checkpointEverySteps && !options.checkpointDir) throw new TrainingConfigError("checkpointEverySteps needs a checkpointDir");
  if (causal) return runTraining(await causalTask(options, settings), options, settings, hooks, backend.name);
  return runTraining(await classificationTask(options, settings), options, settings, hooks, backend.name);
}
