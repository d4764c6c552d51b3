// Command line for the engine; needs no Postgres or Redis.
//   npx tsx services/trainer/cli.ts train|predict|merge ...
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { ClassifierService, initBackend, mergeAdapter, train, type BackendChoice, type StepReport } from "./index.ts";
import { runGenerate } from "./cli-generate.ts";
import { BACKENDS } from "../common/config.ts";

export const USAGE = `Usage:
  npx tsx services/trainer/cli.ts train --model DIR --data FILE.jsonl [--validation FILE] --out DIR [options]
  npx tsx services/trainer/cli.ts predict --model DIR [--adapter DIR] (--text T ... | --file F.jsonl) [--json]
  npx tsx services/trainer/cli.ts merge --model DIR --adapter DIR --out DIR   (classifiers and causal LMs)
  npx tsx services/trainer/cli.ts generate --model DIR [--adapter DIR] (--prompt T | --chat T | --messages F.json) [options]

train options (defaults in brackets):
  --validation-split F     hold out this fraction of --data when no --validation [0]
  --epochs N [3]  --batch-size N [16]  --lr F [5e-4]  --warmup-ratio F [0.06]
  --weight-decay F [0.01]  --max-seq-length N [128]  --seed N [42]  --max-steps N
  --grad-accum N [1]  --max-grad-norm F [1]  --scheduler linear|cosine [linear]
  --class-weights balanced  --eval-every N  --checkpoint-every N
  --checkpoint-dir DIR  --resume CHECKPOINT_DIR  --base-model-name NAME
  --lora-r N [8]  --lora-alpha F [16]  --lora-dropout F [0.1]
  --target-modules a,b|all-linear [q_lin,v_lin DistilBERT; query,value BERT/RoBERTa; c_attn GPT-2; q_proj,v_proj Llama]  --rslora
  --train-on-inputs  --packing   (causal LMs: loss on prompts too; pack examples into full blocks)
generate options:
  --max-new-tokens N [64]  --temperature F [0 = greedy]  --top-k N  --top-p F  --stop S (repeatable)
  --seed N [0]  --no-cache  --json
common:
  --backend auto|tensorflow|wasm-blas|wasm|cpu [auto, or TRAINER_BACKEND]
Data: JSONL lines {"text": "...", "label": "..."} for classifiers; {"prompt": "...", "completion": "..."}
or {"messages": [{"role": "user", "content": "..."}, ...]} for GPT-2 / Llama folders.`;

export class UsageError extends Error {}

export function backendChoice(flag: string | undefined): BackendChoice {
  const choice = flag ?? process.env.TRAINER_BACKEND ?? "auto";
  if (!(BACKENDS as readonly string[]).includes(choice)) throw new UsageError(`--backend must be one of ${BACKENDS.join(", ")}, got "${choice}"`);
  return choice as BackendChoice;
}

export function numberFlag(values: Record<string, unknown>, name: string, fallback: number): number;
export function numberFlag(values: Record<string, unknown>, name: string): number | undefined;
export function numberFlag(values: Record<string, unknown>, name: string, fallback?: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new UsageError(`--${name} needs a number, got "${String(raw)}"`);
  return value;
}

export function required(values: Record<string, unknown>, name: string): string {
  const value = values[name];
  if (typeof value !== "string" || value === "") throw new UsageError(`--${name} is required`);
  return value;
}

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

async function runTrain(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" }, data: { type: "string" }, validation: { type: "string" }, out: { type: "string" },
      "validation-split": { type: "string" }, epochs: { type: "string" }, "batch-size": { type: "string" }, lr: { type: "string" },
      "warmup-ratio": { type: "string" }, "weight-decay": { type: "string" }, "max-seq-length": { type: "string" }, seed: { type: "string" },
      "max-steps": { type: "string" }, "grad-accum": { type: "string" }, "max-grad-norm": { type: "string" }, scheduler: { type: "string" },
      "class-weights": { type: "string" }, "eval-every": { type: "string" }, "checkpoint-every": { type: "string" },
      "checkpoint-dir": { type: "string" }, resume: { type: "string" }, "base-model-name": { type: "string" },
      "lora-r": { type: "string" }, "lora-alpha": { type: "string" }, "lora-dropout": { type: "string" },
      "target-modules": { type: "string" }, rslora: { type: "boolean" }, backend: { type: "string" },
      "train-on-inputs": { type: "boolean" }, packing: { type: "boolean" },
    },
  });
  const scheduler = values.scheduler ?? "linear";
  if (scheduler !== "linear" && scheduler !== "cosine") throw new UsageError("--scheduler must be linear or cosine");
  if (values["class-weights"] !== undefined && values["class-weights"] !== "balanced") throw new UsageError("--class-weights accepts only balanced");
  const backend = await initBackend(backendChoice(values.backend));
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
      lora: {
        r: numberFlag(values, "lora-r", 8),
        alpha: numberFlag(values, "lora-alpha", 16),
        dropout: numberFlag(values, "lora-dropout", 0.1),
        targetModules: values["target-modules"]?.split(",").map((name) => name.trim()).filter(Boolean),
        useRslora: values.rslora ?? false,
      },
      hyper: {
        epochs: numberFlag(values, "epochs", 3),
        batchSize: numberFlag(values, "batch-size", 16),
        learningRate: numberFlag(values, "lr", 5e-4),
        warmupRatio: numberFlag(values, "warmup-ratio", 0.06),
        weightDecay: numberFlag(values, "weight-decay", 0.01),
        maxSeqLength: numberFlag(values, "max-seq-length", 128),
        seed: numberFlag(values, "seed", 42),
        maxSteps: numberFlag(values, "max-steps"),
        gradientAccumulationSteps: numberFlag(values, "grad-accum", 1),
        maxGradNorm: numberFlag(values, "max-grad-norm", 1),
        scheduler,
        classWeights: values["class-weights"] === "balanced" ? "balanced" : null,
        evalEverySteps: numberFlag(values, "eval-every"),
        checkpointEverySteps: numberFlag(values, "checkpoint-every"),
        trainOnInputs: values["train-on-inputs"] ?? false,
        packing: values.packing ?? false,
      },
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

async function runPredict(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { model: { type: "string" }, adapter: { type: "string" }, text: { type: "string", multiple: true }, file: { type: "string" }, json: { type: "boolean" }, backend: { type: "string" } },
  });
  const texts = [...(values.text ?? []), ...(values.file ? await readTexts(values.file) : [])];
  if (texts.length === 0) throw new UsageError("give --text (repeatable) or --file");
  await initBackend(backendChoice(values.backend));
  const service = await ClassifierService.load(required(values, "model"));
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
  process.stdout.write(`merged model written to ${values.out}\n`);
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "train") await runTrain(rest);
    else if (command === "predict") await runPredict(rest);
    else if (command === "merge") await runMerge(rest);
    else if (command === "generate") await runGenerate(rest);
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
