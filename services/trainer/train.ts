// Training entry point: resolves the job's settings from their declaration (settings.ts), builds the
// task the base model calls for (tasks/classification, tasks/causal-lm) and runs the shared loop;
// a composition (options.composition) composes and evaluates adapters instead (compose-job.ts).
import { selectedBackend } from "./backend.ts";
import { runComposition } from "./compose-job.ts";
import { readModelConfigJson } from "./hf/config.ts";
import { runTraining } from "./loop.ts";
import type { TrainHooks, TrainOptions, TrainResult } from "./training-contracts.ts";
import { resolveJobSettings, TrainingConfigError } from "./settings.ts";
import { causalFamilyOf } from "./tasks/causal-lm/config.ts";
import { causalTask } from "./tasks/causal-lm/task.ts";
import { parseEncoderConfig } from "./tasks/classification/config.ts";
import { classificationTask } from "./tasks/classification/task.ts";
import { planTrainingMemory } from "./memory-plan.ts";
import { withWasmHeapErrors } from "./wasm-heap.ts";
import { frozenStorageAvailable } from "./native/frozen-linear.ts";

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
  // The loaders refuse weights that cannot fit the wasm heap; a step whose activations then run it out
  // fails with the plan's figure instead of "memory access out of bounds".
  const { hyperparameters: hyper, lora } = settings;
  const plan = planTrainingMemory(raw, {
    r: lora.r, targetModules: lora.targetModules, batchSize: hyper.batchSize, maxSeqLength: hyper.maxSeqLength, storage: "none", gradientCheckpointing: hyper.gradientCheckpointing,
    nativeKernels: frozenStorageAvailable(),
  });
  return withWasmHeapErrors("training this model (weights, LoRA state and one micro-batch's activations)", plan.weightsBytes + plan.trainableBytes + plan.activationBytes, async () =>
    causal
      ? runTraining(await causalTask(options, settings, plan.gradientCheckpointing), options, settings, hooks, backend.name)
      : runTraining(await classificationTask(options, settings), options, settings, hooks, backend.name),
  );
}
