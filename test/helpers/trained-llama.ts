// A tiny Llama whose weights are trained, made at test time from the causal fixtures (which are random)
// where a test needs a model that is confident on its texts, as a pretrained LLM is on in-distribution
// text.
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { train } from "../../services/trainer/train.ts";
import { mergeCausalAdapter } from "../../services/trainer/tasks/causal-lm/merge.ts";
import { chatRecords, completionRecords } from "../fixtures/make-causal-fixtures.ts";

/** The fixture texts as plain text: every completion record whole, every chat's turns joined by spaces. */
export function fixtureTexts(): string[] {
  return [...completionRecords().map((r) => r.prompt + r.completion), ...chatRecords().map((r) => r.messages.map((m) => m.content).join(" "))];
}

/**
 * llama-tiny trained on fixtureTexts() until its predictions are confident (a few seconds): LoRA r 16
 * on every linear, the loss on every token, merged into the weights, written to `outDir` as a full
 * LlamaForCausalLM folder. Its linear weights are the random ones plus the trained update, as a
 * fine-tuned model's are. Needs the backend initialised.
 */
export async function trainedLlama(fixtures: string, outDir: string): Promise<string> {
  const work = `${outDir}.work`;
  const records = fixtureTexts().map((text) => {
    const cut = text.indexOf(" ");
    return JSON.stringify({ prompt: text.slice(0, cut), completion: text.slice(cut) });
  });
  const trainFile = path.join(work, "texts.jsonl");
  await mkdir(work, { recursive: true });
  await writeFile(trainFile, Array.from({ length: 4 }, () => records).flat().join("\n") + "\n");
  await train({
    modelDir: path.join(fixtures, "llama-tiny"),
    trainFile,
    outDir: path.join(work, "adapter"),
    lora: { r: 16, alpha: 32, dropout: 0, targetModules: ["all-linear"] },
    hyper: { epochs: 40, batchSize: 8, learningRate: 2e-2, warmupRatio: 0, weightDecay: 0, maxSeqLength: 64, seed: 3, trainOnInputs: true },
  });
  await mergeCausalAdapter(path.join(fixtures, "llama-tiny"), path.join(work, "adapter"), outDir);
  return outDir;
}
