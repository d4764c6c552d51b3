// The job settings declared once (services/trainer/settings.ts): the defaults users get, the checks every
// setting has, and the copies derived from the declaration (README table, CLI flags, API schema).
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { describe, it } from "node:test";
import { settingFlagOptions, settingsFromFlags, settingsHelp } from "../../services/trainer/cli-flags.ts";
import { settingsTable } from "../../services/trainer/settings-table.ts";
import { HYPERPARAMETER_SETTINGS, leafSettings, LORA_SETTINGS, resolveJobSettings, settingsJsonSchema, TrainingConfigError } from "../../services/trainer/settings.ts";

describe("job settings", () => {
  it("resolves nothing given to the service's defaults", () => {
    assert.deepEqual(resolveJobSettings({}, "distilbert"), {
      lora: { r: 8, alpha: 16, dropout: 0.05, targetModules: ["q_lin", "v_lin"], useRslora: false, quantization: "none", doubleQuant: false },
      hyperparameters: {
        epochs: 3, batchSize: 8, learningRate: 2e-4, warmupRatio: 0.06, weightDecay: 0, maxSeqLength: 128, seed: 42,
        gradientAccumulationSteps: 1, maxGradNorm: 1, scheduler: "linear", classWeights: null, trainOnInputs: false, packing: false, gradientCheckpointing: "auto",
        evalGenerations: 4, evalMaxNewTokens: 32,
      },
    });
    assert.deepEqual(resolveJobSettings({}, "gpt2").lora.targetModules, ["c_attn"]);
  });

  it("keeps given values and refuses values outside the declared ranges, unknown settings and unknown model types", () => {
    const given = resolveJobSettings({ lora: { r: 4, targetModules: ["all-linear"] }, hyperparameters: { maxSteps: 10, classWeights: "balanced" } }, "llama");
    assert.equal(given.lora.r, 4);
    assert.deepEqual(given.lora.targetModules, ["all-linear"]);
    assert.equal(given.hyperparameters.maxSteps, 10);
    assert.equal(given.hyperparameters.classWeights, "balanced");
    const refused: [object, RegExp][] = [
      [{ lora: { r: 0 } }, /^lora r must be an integer in 1\.\.256, got 0$/],
      [{ lora: { dropout: 0.95 } }, /lora dropout must be a number in 0\.\.0\.9/],
      [{ lora: { targetModules: [] } }, /lora targetModules must be 1\.\.32 distinct module names/],
      [{ hyperparameters: { warmupRatio: 1 } }, /warmupRatio must be a number in \[0, 1\)/],
      [{ hyperparameters: { epochs: 1.5 } }, /epochs must be an integer/],
      [{ hyperparameters: { scheduler: "step" } }, /scheduler must be one of linear, cosine/],
      [{ hyperparameters: { lr: 1 } }, /unknown setting lr/],
    ];
    for (const [settings, message] of refused) assert.throws(() => resolveJobSettings(settings, "bert"), (error: Error) => error instanceof TrainingConfigError && message.test(error.message));
    assert.throws(() => resolveJobSettings({}, "t5"), /no default target modules for model_type t5/);
    assert.doesNotThrow(() => resolveJobSettings({ lora: { targetModules: ["q"] } }, "t5"));
  });

  it("gives the CLI one flag per setting, with the declared default in its help", () => {
    const options = settingFlagOptions();
    for (const [, setting] of [...leafSettings(LORA_SETTINGS), ...leafSettings(HYPERPARAMETER_SETTINGS)]) {
      assert.ok(options[setting.flag], setting.flag);
      assert.match(settingsHelp(), new RegExp(`--${setting.flag}\\b`));
    }
    assert.match(settingsHelp(), /--lr F +peak AdamW learning rate \[0\.0002\]/);
    assert.deepEqual(settingsFromFlags({}), { lora: {}, hyper: {} });
    assert.deepEqual(settingsFromFlags({ "lora-r": "4", "target-modules": "q_lin, v_lin", rslora: true, lr: "1e-3", "class-weights": "balanced" }), {
      lora: { r: 4, targetModules: ["q_lin", "v_lin"], useRslora: true },
      hyper: { learningRate: 1e-3, classWeights: "balanced" },
    });
  });

  it("declares early stopping as a group: unset unless given, then each member defaulted and checked", () => {
    assert.equal("earlyStopping" in resolveJobSettings({}, "bert").hyperparameters, false);
    assert.deepEqual(resolveJobSettings({ hyperparameters: { evalEverySteps: 5, earlyStopping: { patience: 2 } } }, "bert").hyperparameters.earlyStopping, {
      metric: "loss", patience: 2, minDelta: 0, keep: "best",
    });
    assert.throws(() => resolveJobSettings({ hyperparameters: { earlyStopping: {} } }, "bert"), /earlyStopping needs evalEverySteps/);
    assert.throws(() => resolveJobSettings({ hyperparameters: { evalEverySteps: 5, earlyStopping: { metric: "bleu" } as never } }, "bert"), /earlyStopping\.metric must be one of/);
    assert.throws(() => resolveJobSettings({ hyperparameters: { evalEverySteps: 5, earlyStopping: { wait: 1 } as never } }, "bert"), /unknown setting earlyStopping\.wait/);
    assert.deepEqual(settingsFromFlags({ "early-stopping-patience": "4", "eval-every": "10" }).hyper, { earlyStopping: { patience: 4 }, evalEverySteps: 10 });
    const schema = settingsJsonSchema(HYPERPARAMETER_SETTINGS) as { properties: Record<string, { additionalProperties?: boolean; properties?: Record<string, unknown> }> };
    assert.equal(schema.properties.earlyStopping.additionalProperties, false);
    assert.deepEqual(Object.keys(schema.properties.earlyStopping.properties!), ["metric", "patience", "minDelta", "keep"]);
  });

  it("gives the API a schema with the same defaults and ranges", () => {
    const schema = settingsJsonSchema(HYPERPARAMETER_SETTINGS) as { additionalProperties: boolean; properties: Record<string, Record<string, unknown>> };
    assert.equal(schema.additionalProperties, false);
    assert.deepEqual(schema.properties.learningRate, { type: "number", exclusiveMinimum: 0, maximum: 1, default: 2e-4, description: HYPERPARAMETER_SETTINGS.learningRate.description });
    assert.deepEqual(schema.properties.classWeights.type, ["string", "null"]);
    assert.equal("default" in schema.properties.maxSteps, false, "an unset setting has no default");
    const lora = settingsJsonSchema(LORA_SETTINGS) as { properties: Record<string, Record<string, unknown>> };
    assert.equal("default" in lora.properties.targetModules, false, "target modules default per architecture, at submission");
    assert.equal(lora.properties.dropout.default, 0.05);
  });

  it("keeps the README's settings table in step with the declaration", async () => {
    const readme = await readFile(new URL("../../services/trainer/README.md", import.meta.url), "utf8");
    const table = /<!-- settings-table:start -->\n([\s\S]*?)\n<!-- settings-table:end -->/.exec(readme)?.[1];
    assert.equal(table, settingsTable(), "regenerate it with: npx tsx services/trainer/settings-table.ts");
  });
});
