// Command line for the engine; needs no Postgres or Redis. The entry point: it reads the environment's
// configuration (services/common/config.ts) and passes the backend choice to the engine.
//   npx tsx services/trainer/cli.ts train|predict|merge|generate|sweep|compose ...
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { loadConfig, type Config } from "../common/config.ts";
import { helpLine, numberFlag, required, settingFlagOptions, settingsFromFlags, settingsHelp, startBackend, UsageError } from "./cli-flags.ts";
import { runGenerate } from "./cli-generate.ts";
import { runCompose, runSweep } from "./cli-sweep-compose.ts";
import { ClassifierService, mergeAdapter, train, type StepReport } from "./index.ts";

export const USAGE = `Usage:
  npx tsx services/trainer/cli.ts train --model DIR --data FILE.jsonl [--validation FILE] --out DIR [options]
  npx tsx services/trainer/cli.ts predict --model DIR [--adapter DIR] (--text T ... | --file F.jsonl) [--json]
  npx tsx services/trainer/cli.ts merge --model DIR --adapter DIR --out DIR   (classifiers and causal LMs)
  npx tsx services/trainer/cli.ts generate --model DIR [--adapter DIR] (--prompt T | --chat T | --messages F.json) [options]
  npx tsx services/trainer/cli.ts sweep --model DIR --data FILE (--validation FILE | --validation-split F) --out DIR [--ranks 2,4,8,16,32]
      [--alpha-policy 2r|fixed] [--metric M] [--tolerance 0.01] [train options]   (one adapter per rank in DIR/r-<rank>; prints table and pick)
  npx tsx services/trainer/cli.ts compose --adapter DIR --adapter DIR ... [--weights 1,1] [--type svd|linear|cat] [--svd-rank N] --out DIR

train options (defaults in brackets; the same settings and defaults as the API's job requests):
${settingsHelp()}
${helpLine("--validation-split F", "hold out this fraction of --data when no --validation [0]")}
${helpLine("--checkpoint-dir DIR", "where --checkpoint-every saves step-N folders")}
${helpLine("--resume CHECKPOINT_DIR", "continue from a checkpoint made with the same data and settings")}
${helpLine("--base-model-name NAME", "base_model_name_or_path in adapter_config.json [--model]")}
generate options:
  --max-new-tokens N [64]  --temperature F [0 = greedy]  --top-k N  --top-p F  --stop S (repeatable)
  --seed N [0]  --no-cache  --json
common:
  --backend auto|tensorflow|wasm-blas|wasm|cpu [TRAINER_BACKEND, else auto]
Data: JSONL lines {"text": "...", "label": "..."} for classifiers; {"prompt": "...", "completion": "..."}
or {"messages": [{"role": "user", "content": "..."}, ...]} for GPT-2 / Llama folders.`;

function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return "?";
  const seconds = Math.round(ms / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(s).padStart(2, "0")}s`;
}

/** One progress line: bar, step/total, loss, tokens/s, ETA. On a terminal it redraws in place. */
function progressLine(report: StepReport): string {
  const width = 24;
  const filled = Math.round((report.step / report.totalSteps) * width);
  const bar = "#".repeat(filled) + "-".repeat(width - filled);
  return `[${bar}] ${report.step}/${report.totalSteps} loss ${report.loss.toFixed(4)} lr ${report.learningRate.toExponential(2)} ${Math.round(report.tokensPerSecond)} tok/s ETA ${formatDuration(report.etaMs)}`;
}

async function runTrain(args: string[], config: Config): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" }, data: { type: "string" }, validation: { type: "string" }, out: { type: "string" },
      "validation-split": { type: "string" }, "checkpoint-dir": { type: "string" }, resume: { type: "string" },
      "base-model-name": { type: "string" }, backend: { type: "string" }, ...settingFlagOptions(),
    },
  });
  const backend = await startBackend(values.backend, config);
  process.stderr.write(`backend: ${backend.name}${backend.notes.length ? ` (${backend.notes.join("; ")})` : ""}\n`);
  const interactive = process.stderr.isTTY;
  let lastPrinted = 0;
  const result = await train(
    {
      modelDir: required(values, "model"),
      trainFile: required(values, "data"),
      validationFile: values.validation,
      validationSplit: numberFlag(values, "validation-split"),
      outDir: required(values, "out"),
      checkpointDir: values["checkpoint-dir"],
      resumeFrom: values.resume,
      baseModelName: values["base-model-name"],
      ...settingsFromFlags(values),
    },
    {
      onStep(report) {
        const now = Date.now();
        if (interactive) process.stderr.write(`\r${progressLine(report)}\x1b[K`);
        else if (now - lastPrinted > 2000 || report.step === report.totalSteps || report.step === 1) {
          process.stderr.write(`${progressLine(report)}\n`);
          lastPrinted = now;
        }
      },
      onEvaluation({ step, metrics, baseline }) {
        const headline = (m: Record<string, number>) => Object.entries(m).filter(([key]) => !key.includes("/")).map(([key, value]) => `${key} ${value.toFixed(4)}`).join(" ");
        const line = `eval @${step}: ${headline(metrics)} (base: ${headline(baseline)})`;
        process.stderr.write(`${interactive ? "\n" : ""}${line}\n`);
      },
      onCheckpoint({ dir }) {
        process.stderr.write(`${interactive ? "\n" : ""}checkpoint: ${dir}\n`);
      },
    },
  );
  if (interactive) process.stderr.write("\n");
  process.stdout.write(JSON.stringify({ outcome: result.outcome, step: result.step, adapterDir: result.adapterDir, metrics: result.metrics, baseline: result.baseline }, null, 2) + "\n");
}

async function readTexts(file: string): Promise<string[]> {
  const lines = (await readFile(file, "utf8")).split("\n");
  const texts: string[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new UsageError(`${file} line ${index + 1}: invalid JSON`);
    }
    const text = typeof value === "string" ? value : (value as { text?: unknown }).text;
    if (typeof text !== "string") throw new UsageError(`${file} line ${index + 1}: expected a "text" string`);
    texts.push(text);
  });
  return texts;
}

async function runPredict(args: string[], config: Config): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { model: { type: "string" }, adapter: { type: "string" }, text: { type: "string", multiple: true }, file: { type: "string" }, json: { type: "boolean" }, backend: { type: "string" } },
  });
  const texts = [...(values.text ?? []), ...(values.file ? await readTexts(values.file) : [])];
  if (texts.length === 0) throw new UsageError("give --text (repeatable) or --file");
  const backend = await startBackend(values.backend, config);
  const service = await ClassifierService.load(required(values, "model"), backend.name);
  try {
    const predictions = await service.predict(texts, values.adapter);
    if (values.json) {
      process.stdout.write(JSON.stringify(predictions.map((p, i) => ({ text: texts[i], ...p }))) + "\n");
    } else {
      predictions.forEach((p, i) => {
        const logits = p.logits.map((v) => v.toFixed(4)).join(", ");
        process.stdout.write(`${p.label}\t${p.score.toFixed(4)}\tlogits [${logits}]\t${texts[i]}\n`);
      });
    }
  } finally {
    service.dispose();
  }
}

async function runMerge(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: { model: { type: "string" }, adapter: { type: "string" }, out: { type: "string" } } });
  await mergeAdapter(required(values, "model"), required(values, "adapter"), required(values, "out"));
  // A quantized training base (lora.quantization) is never what gets merged into: say so.
  process.stdout.write(`merged model written to ${values.out} (the adapter added to the base checkpoint's full-precision weights, whatever lora.quantization it was trained with)\n`);
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "train") await runTrain(rest, loadConfig());
    else if (command === "predict") await runPredict(rest, loadConfig());
    else if (command === "merge") await runMerge(rest);
    else if (command === "generate") await runGenerate(rest, loadConfig());
    else if (command === "sweep") await runSweep(rest, loadConfig());
    else if (command === "compose") await runCompose(rest);
    else {
      process.stderr.write(`${USAGE}\n`);
      return command === undefined || command === "--help" || command === "help" ? 0 : 2;
    }
    return 0;
  } catch (error) {
    const usage = error instanceof UsageError || (error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS");
    process.stderr.write(`error: ${(error as Error).message}\n${usage ? "run with --help for usage\n" : ""}`);
    return usage ? 2 : 1;
  }
}

if (import.meta.url === `file://${process.argv[1]}`) process.exitCode = await main(process.argv.slice(2));
