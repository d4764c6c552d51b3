// The causal LM task for the shared training loop (train() picks it for GPT-2, Llama, Qwen2 and Mistral folders): LoRA on
// the frozen decoder, token-level cross-entropy on the labelled positions, and metrics for the adapter and
// the untouched base.
import { splitValidation } from "../../data/batching.ts";
import type { ChatRecord, CompletionRecord } from "../../data/records.ts";
import { initLoraModules, loraKey, matchTargetModules, savedTargetModules } from "../../lora.ts";
import type { TrainingTask, TrainOptions } from "../../training-contracts.ts";
import { crossEntropy } from "../../losses.ts";
import { splitAdapterTensors } from "../../peft.ts";
import type { NamedArray } from "../../safetensors.ts";
import { TrainingConfigError, type JobSettings } from "../../settings.ts";
import { causalBatch, encodeChat, encodeCompletion, hasLoss, packExamples, readCausalFile, type CausalExample, type EncodingSettings } from "./data.ts";
import { detailedCausalEvaluation, evaluateCausal, heldOutPrompts } from "./evaluation.ts";
import { chatFormatterOf, loadCausalPretrained, type CausalPretrained } from "./load.ts";
import { selectRows } from "./model.ts";

export function encodeCausalRecords(records: (CompletionRecord | ChatRecord)[], format: "completion" | "chat", pretrained: CausalPretrained, settings: EncodingSettings): CausalExample[] {
  if (format === "completion") return records.map((record) => encodeCompletion(record as CompletionRecord, pretrained.tokenizer, settings));
  const formatter = chatFormatterOf(pretrained);
  return records.map((record) => encodeChat(record as ChatRecord, pretrained.tokenizer, formatter, settings));
}

/** `checkpointLayers`: recompute decoder layers in the backward (the memory plan's decision on hyperparameters.gradientCheckpointing). */
export async function causalTask(options: TrainOptions, jobSettings: JobSettings, checkpointLayers: boolean): Promise<TrainingTask<CausalExample>> {
  const { quantization = "none", doubleQuant = false } = jobSettings.lora;
  const pretrained = await loadCausalPretrained(options.modelDir, { quantization, doubleQuant });
  try {
    return await causalTaskOn(pretrained, options, jobSettings, checkpointLayers);
  } catch (error) {
    // Bad options or data are found after the weights are on the device; a sandbox lives on for the next job.
    pretrained.model.dispose();
    throw error;
  }
}

async function causalTaskOn(pretrained: CausalPretrained, options: TrainOptions, jobSettings: JobSettings, checkpointLayers: boolean): Promise<TrainingTask<CausalExample>> {
  const hyper = jobSettings.hyperparameters;
  const { config, model, tokenizer } = pretrained;
  const requested = jobSettings.lora;
  const linears = model.linearModules();
  const settings = { ...requested, targetModules: savedTargetModules(requested, matchTargetModules(linears.map((l) => l.name), requested.targetModules)) };

  const train = await readCausalFile(options.trainFile);
  let trainRecords = train.records;
  let validationRecords: (CompletionRecord | ChatRecord)[] = [];
  let validationFormat = train.format;
  if (options.validationFile) {
    const validation = await readCausalFile(options.validationFile);
    validationRecords = validation.records;
    validationFormat = validation.format;
  } else if (options.validationSplit && options.validationSplit > 0) {
    ({ train: trainRecords, validation: validationRecords } = splitValidation(trainRecords, options.validationSplit, hyper.seed));
  }
  const encoding: EncodingSettings = { maxLength: Math.min(hyper.maxSeqLength, config.maxPositions), trainOnInputs: hyper.trainOnInputs, eosId: pretrained.eosIds[0] };
  const encodedTrain = encodeCausalRecords(trainRecords, train.format, pretrained, encoding);
  const withLoss = encodedTrain.filter(hasLoss);
  const trainExamples = hyper.packing ? packExamples(withLoss, encoding.maxLength).filter(hasLoss) : withLoss;
  if (trainExamples.length === 0) throw new TrainingConfigError("no training example keeps a target token within maxSeqLength");
  const validationExamples = encodeCausalRecords(validationRecords, validationFormat, pretrained, encoding).filter(hasLoss);

  const initialParams = new Map<string, NamedArray>();
  for (const [module, { a, b }] of initLoraModules(linears, settings, hyper.seed, config.family)) {
    initialParams.set(loraKey(module, "A"), a);
    initialParams.set(loraKey(module, "B"), b);
  }
  const padId = tokenizer.padId;
  const evaluationBatch = Math.max(hyper.batchSize, 8);
  const prompts = heldOutPrompts(validationRecords, pretrained, encoding.maxLength, hyper.evalGenerations);

  return {
    name: "causal_lm",
    trainExamples,
    examplesWithoutTargets: encodedTrain.length - withLoss.length,
    validationCount: validationExamples.length,
    labels: [],
    lora: settings,
    schedule: { maxLength: encoding.maxLength, trainOnInputs: encoding.trainOnInputs, packing: hyper.packing },
    initialParams,
    loss: (examples, forward) => {
      const { batch, rows, targets } = causalBatch(examples, padId);
      const options = { ...forward, checkpointLayers };
      return crossEntropy(model.logits(selectRows(model.hidden(batch, options), rows, batch.length)), targets);
    },
    evaluate: (forward) => evaluateCausal(model, validationExamples, forward, padId, evaluationBatch),
    evaluateInDetail: (forward) => detailedCausalEvaluation(pretrained, validationExamples, prompts, forward, { batchSize: evaluationBatch, maxNewTokens: hyper.evalMaxNewTokens }),
    baseForward: {},
    adapter: (params) => ({
      settings, modulesToSave: [], lora: splitAdapterTensors(params).lora, head: new Map(), labels: [], baseModelName: options.baseModelName ?? options.modelDir,
      taskType: "CAUSAL_LM", fanInFanOut: config.family === "gpt2",
    }),
    dispose: () => model.dispose(),
  };
}
