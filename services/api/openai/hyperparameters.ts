// How OpenAI's fine-tuning hyperparameters (n_epochs, batch_size, learning_rate_multiplier, each
// a number or "auto") become our job settings, and back. "auto" is resolved here, once, from the
// training set's size, so the job row says exactly what runs; the rule is in services/api/README.md.
import { AppError } from "../../common/errors.ts";
import { HYPERPARAMETER_SETTINGS, type HyperparameterOptions, type Hyperparameters } from "../../trainer/index.ts";

export type Auto<T> = T | "auto";

export interface OpenAiHyperparameters {
  n_epochs?: Auto<number>;
  batch_size?: Auto<number>;
  learning_rate_multiplier?: Auto<number>;
}

/** The learning rate that learning_rate_multiplier multiplies: our declared default. */
export const BASE_LEARNING_RATE = HYPERPARAMETER_SETTINGS.learningRate.default;

/** "auto" epochs aim for at least this many and at most this many training examples seen in all. */
export const AUTO_MIN_EXAMPLES_SEEN = 100;
export const AUTO_MAX_EXAMPLES_SEEN = 25_000;
/** "auto" epochs when the dataset's size puts no bound in play. */
export const AUTO_DEFAULT_EPOCHS = HYPERPARAMETER_SETTINGS.epochs.default;
/** "auto" epochs never exceed this. */
export const AUTO_MAX_EPOCHS = 25;
/** "auto" batch size: about this fraction of the examples, within 1..AUTO_MAX_BATCH_SIZE. */
export const AUTO_BATCH_FRACTION = 0.002;
export const AUTO_MAX_BATCH_SIZE = 256;

/** OpenAI's rule: 3 epochs, raised so that ≥ 100 examples are seen, lowered so that ≤ 25,000 are. */
export function autoEpochs(examples: number): number {
  const n = Math.max(1, examples);
  if (n * AUTO_DEFAULT_EPOCHS < AUTO_MIN_EXAMPLES_SEEN) return Math.min(AUTO_MAX_EPOCHS, Math.ceil(AUTO_MIN_EXAMPLES_SEEN / n));
  if (n * AUTO_DEFAULT_EPOCHS > AUTO_MAX_EXAMPLES_SEEN) return Math.max(1, Math.floor(AUTO_MAX_EXAMPLES_SEEN / n));
  return AUTO_DEFAULT_EPOCHS;
}

/** About 0.2% of the examples, at least 1, at most 256; never more than the examples themselves. */
export function autoBatchSize(examples: number): number {
  return Math.max(1, Math.min(AUTO_MAX_BATCH_SIZE, Math.ceil(examples * AUTO_BATCH_FRACTION), examples));
}

const invalid = (param: string, message: string) => new AppError(400, "invalid_hyperparameter", message, [{ path: param, message }]);

/** Our hyperparameters for a job on a training set of `examples` records. */
export function toOurHyperparameters(given: OpenAiHyperparameters, examples: number, seed: number | undefined): HyperparameterOptions {
  const { n_epochs = "auto", batch_size = "auto", learning_rate_multiplier = "auto" } = given;
  const options: HyperparameterOptions = {
    epochs: n_epochs === "auto" ? autoEpochs(examples) : n_epochs,
    batchSize: batch_size === "auto" ? autoBatchSize(examples) : batch_size,
  };
  if (learning_rate_multiplier !== "auto") {
    const learningRate = BASE_LEARNING_RATE * learning_rate_multiplier;
    const { maximum } = HYPERPARAMETER_SETTINGS.learningRate;
    if (!(learningRate > 0 && learningRate <= maximum)) {
      throw invalid("hyperparameters.learning_rate_multiplier", `learning_rate_multiplier must be in (0, ${maximum / BASE_LEARNING_RATE}]: it multiplies the default learning rate ${BASE_LEARNING_RATE}`);
    }
    options.learningRate = learningRate;
  }
  if (seed !== undefined) options.seed = seed;
  return options;
}

/** What a job's resolved settings look like in OpenAI's terms. */
export function toOpenAiHyperparameters(hyperparameters: Hyperparameters) {
  return {
    n_epochs: hyperparameters.epochs,
    batch_size: hyperparameters.batchSize,
    // Rounded so that 2e-4 × 1.5 reads back as 1.5, not 1.4999999999999998.
    learning_rate_multiplier: Number((hyperparameters.learningRate / BASE_LEARNING_RATE).toPrecision(12)),
  };
}
