// A Hugging Face model folder's config.json, read for every task; each task parses the fields it needs.
import { readFile } from "node:fs/promises";
import path from "node:path";

export class ModelConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ModelConfigError";
  }
}

export async function readModelConfigJson(modelDir: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path.join(modelDir, "config.json"), "utf8");
  } catch {
    throw new ModelConfigError(`no config.json in ${modelDir}`);
  }
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw new ModelConfigError(`config.json in ${modelDir} is not valid JSON`);
  }
}
