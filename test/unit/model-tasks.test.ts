// Which task a base model folder serves, from its config.json: the registry lists Qwen2 and Mistral
// decoders as causal LMs beside GPT-2 and Llama.
import assert from "node:assert/strict";
import { test } from "node:test";
import { tasksOf } from "../../services/common/models.ts";

test("decoder architectures and model types serve causal_lm; encoders classification; others nothing", () => {
  for (const architecture of ["GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"]) assert.deepEqual(tasksOf(architecture, "unknown"), ["causal_lm"], architecture);
  for (const modelType of ["gpt2", "llama", "qwen2", "mistral"]) assert.deepEqual(tasksOf(modelType, modelType), ["causal_lm"], modelType);
  assert.deepEqual(tasksOf("BertModel", "bert"), ["classification"]);
  assert.deepEqual(tasksOf("T5ForConditionalGeneration", "t5"), []);
});
