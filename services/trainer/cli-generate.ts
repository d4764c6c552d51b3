// The CLI's `generate` command: text from a GPT-2 / Llama folder, optionally with a LoRA adapter.
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import type { Config } from "../common/config.ts";
import { numberFlag, required, startBackend, UsageError } from "./cli-flags.ts";
import { GeneratorService, type ChatMessage, type GenerationRequest } from "./index.ts";

async function request(values: { prompt?: string; chat?: string; messages?: string }): Promise<GenerationRequest> {
  const given = [values.prompt, values.chat, values.messages].filter((value) => value !== undefined).length;
  if (given !== 1) throw new UsageError("give exactly one of --prompt, --chat or --messages");
  if (values.prompt !== undefined) return { prompt: values.prompt };
  if (values.chat !== undefined) return { messages: [{ role: "user", content: values.chat }] };
  let messages: unknown;
  try {
    messages = JSON.parse(await readFile(values.messages!, "utf8"));
  } catch (error) {
    throw new UsageError(`--messages ${values.messages}: ${(error as Error).message}`);
  }
  if (!Array.isArray(messages)) throw new UsageError("--messages must hold a JSON array of {role, content}");
  return { messages: messages as ChatMessage[] };
}

export async function runGenerate(args: string[], config: Config): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" }, adapter: { type: "string" }, prompt: { type: "string" }, chat: { type: "string" }, messages: { type: "string" },
      "max-new-tokens": { type: "string" }, temperature: { type: "string" }, "top-k": { type: "string" }, "top-p": { type: "string" },
      stop: { type: "string", multiple: true }, seed: { type: "string" }, "no-cache": { type: "boolean" }, json: { type: "boolean" }, backend: { type: "string" },
    },
  });
  const input = await request(values);
  const backend = await startBackend(values.backend, config);
  const service = await GeneratorService.load(required(values, "model"), backend.name);
  try {
    const result = await service.generate(
      input,
      {
        maxNewTokens: numberFlag(values, "max-new-tokens", 64),
        temperature: numberFlag(values, "temperature", 0),
        topK: numberFlag(values, "top-k"),
        topP: numberFlag(values, "top-p"),
        stop: values.stop,
        seed: numberFlag(values, "seed", 0),
        useCache: !values["no-cache"],
      },
      values.adapter,
    );
    process.stdout.write(values.json ? JSON.stringify(result) + "\n" : result.text + "\n");
  } finally {
    service.dispose();
  }
}
