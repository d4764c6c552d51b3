// The adapter's README.md, a Hugging Face model card: YAML front matter (base_model, library_name: peft,
// pipeline_tag, tags, the base's license when its folder states one, model-index with the adapter's
// metrics) and Markdown made from the same object as metrics.json (data, settings, evaluation against the
// base, training curve, intended use, limitations), so every number in it is one of metrics.json's.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import type { Adapter } from "./peft.ts";
import { isCausalDetail, type FinalReport } from "./report.ts";
import { ECE_BINS } from "./tasks/classification/metrics.ts";
import type { JobSettings } from "./settings.ts";

/** Findings about the training data, as the job's preflight reports them. */
export interface DataQuality {
  findings: Array<{ code: string; severity: string; count: number; lines: number[]; message: string }>;
}

/** The parts of metrics.json the card reads. */
export interface MetricsFile {
  labels: string[];
  task?: string;
  metrics: Record<string, number>;
  baseline: Record<string, number>;
  adapter_step: number;
  steps: number;
  epochs: number;
  train_examples: number;
  validation_examples: number;
  train_examples_without_targets?: number;
  tokens_seen: number;
  backend: string;
  settings: JobSettings;
  evaluations: { step: number; metrics: Record<string, number> }[];
  loss_curve: { step: number; loss: number; learning_rate: number }[];
  early_stopping?: { best_step?: number | null; stopped_at_step?: number | null };
  data?: Record<string, Record<string, number>>;
  report?: FinalReport;
}

export interface ModelCardInput {
  adapter: Adapter;
  metricsFile: MetricsFile;
  /** The base model's folder: its config.json names the architecture, its README.md may state a license. */
  modelDir: string;
  dataQuality?: DataQuality;
}

/** Tables round to this many decimals; metrics.json and the front matter's model-index hold the exact values. */
export const CARD_DECIMALS = 4;
/** A gap between groups at least this large is called out under Limitations. */
export const GROUP_GAP_WARNING = 0.1;
/** An expected calibration error at least this large is called out under Limitations. */
export const ECE_WARNING = 0.1;

export function formatNumber(value: number | undefined): string {
  if (value === undefined) return "–";
  if (!Number.isFinite(value)) return String(value);
  return Number.isInteger(value) ? String(value) : value.toFixed(CARD_DECIMALS);
}

function yamlScalar(value: unknown): string {
  if (typeof value === "number") return Number.isFinite(value) ? String(value) : Number.isNaN(value) ? ".nan" : value > 0 ? ".inf" : "-.inf";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "[]";
  if (value !== null && typeof value === "object") return "{}";
  return String(value);
}

const isCollection = (value: unknown): value is object => typeof value === "object" && value !== null && Object.keys(value).length > 0;

/** Block-style YAML; strings are double-quoted (JSON's escapes are YAML's), so any text is safe. */
export function toYaml(value: object, indent = ""): string[] {
  const lines: string[] = [];
  if (Array.isArray(value)) {
    for (const item of value) {
      if (!isCollection(item)) lines.push(`${indent}- ${yamlScalar(item)}`);
      else {
        const inner = toYaml(item, `${indent}  `);
        lines.push(`${indent}- ${inner[0].trimStart()}`, ...inner.slice(1));
      }
    }
    return lines;
  }
  for (const [key, item] of Object.entries(value)) {
    const name = /^[A-Za-z_][\w-]*$/.test(key) ? key : JSON.stringify(key);
    if (isCollection(item)) lines.push(`${indent}${name}:`, ...toYaml(item, `${indent}  `));
    else lines.push(`${indent}${name}: ${yamlScalar(item)}`);
  }
  return lines;
}

/** The `license` a Hugging Face folder states in its README.md front matter, or config.json's `license`. */
export async function baseLicense(modelDir: string): Promise<string | undefined> {
  const readme = await readFile(path.join(modelDir, "README.md"), "utf8").catch(() => "");
  const frontMatter = /^---\r?\n([\s\S]*?)\r?\n---/.exec(readme)?.[1] ?? "";
  const stated = /^license:[ \t]*(.+?)[ \t]*$/m.exec(frontMatter)?.[1].replace(/^(["'])(.*)\1$/, "$2");
  if (stated) return stated;
  const config = JSON.parse(await readFile(path.join(modelDir, "config.json"), "utf8").catch(() => "{}")) as { license?: unknown };
  return typeof config.license === "string" ? config.license : undefined;
}

export async function modelType(modelDir: string): Promise<string | undefined> {
  const config = JSON.parse(await readFile(path.join(modelDir, "config.json"), "utf8").catch(() => "{}")) as { model_type?: unknown };
  return typeof config.model_type === "string" ? config.model_type : undefined;
}

const row = (cells: (string | number)[]) => `| ${cells.join(" | ")} |`;
export function table(header: string[], rows: (string | number)[][]): string[] {
  return [row(header), row(header.map(() => "---")), ...rows.map(row)];
}
export const escapeCell = (text: string) => text.replace(/\|/g, "\\|").replace(/\r?\n/g, " ⏎ ");

function dataSection(file: MetricsFile, quality: DataQuality | undefined): string[] {
  const lines = ["## Training data", "", ...table(["split", "examples"], [["train", file.train_examples], ["validation", file.validation_examples]]), ""];
  if (file.train_examples_without_targets) lines.push(`${file.train_examples_without_targets} training example(s) had no target token left after truncation to maxSeqLength and were dropped.`, "");
  for (const [name, counts] of Object.entries(file.data ?? {})) {
    lines.push(`${name.replace(/_/g, " ")}:`, "", ...table(["value", "examples"], Object.entries(counts).map(([key, count]) => [escapeCell(key), count])), "");
  }
  lines.push("### Data quality", "");
  if (!quality) lines.push("No data-quality report was attached to this run.", "");
  else if (!quality.findings.length) lines.push("The data-quality checks found nothing.", "");
  else {
    const rows = quality.findings.map((f) => [f.severity, f.code, f.count, f.lines.slice(0, 10).join(", ") + (f.lines.length > 10 ? ", …" : ""), escapeCell(f.message)]);
    lines.push(...table(["severity", "finding", "count", "lines", "message"], rows), "");
  }
  return lines;
}

function settingsSection(settings: JobSettings): string[] {
  const flat = (group: string, values: object): [string, string][] =>
    Object.entries(values).flatMap(([key, value]): [string, string][] =>
      value !== null && typeof value === "object" && !Array.isArray(value) ? flat(`${group}.${key}`, value) : [[`${group}.${key}`, JSON.stringify(value)]],
    );
  const rows = [...flat("lora", settings.lora), ...flat("hyperparameters", settings.hyperparameters)].map(([name, value]) => [`\`${name}\``, `\`${value}\``]);
  return ["## Settings", "", "Every setting as resolved (given or default):", "", ...table(["setting", "value"], rows), ""];
}

function evaluationSection(file: MetricsFile): string[] {
  const lines = ["## Evaluation", ""];
  if (!file.validation_examples) return [...lines, "No validation data was given, so the adapter was not evaluated.", ""];
  lines.push(
    `On the validation set (${file.validation_examples} examples), the adapter's weights of step ${file.adapter_step} next to the untouched base model. ` +
      `Values are rounded to ${CARD_DECIMALS} decimals; \`metrics.json\` holds them exactly.`,
    "",
  );
  const names = Object.keys(file.metrics);
  lines.push(...table(["metric", "adapter", "base"], names.map((name) => [`\`${name}\``, formatNumber(file.metrics[name]), formatNumber(file.baseline[name])])), "");
  const report = file.report;
  if (!report) return lines;
  if (isCausalDetail(report.adapter)) {
    lines.push("Loss and perplexity are over the validation targets' tokens (perplexity = exp(loss)); `next_token_accuracy` is the share of those tokens the model ranks first.", "");
    const generation = report.adapter.generation;
    if (generation) {
      lines.push(
        `\`exact_match\`, \`rouge_l\` and \`bleu\` score greedy generations (at most ${file.settings.hyperparameters.evalMaxNewTokens} new tokens) for the first ${generation.samples.length} validation prompts against their reference replies: ` +
          "exact match after trimming whitespace; ROUGE-L F-measure (β = 1) on lowercased letter-and-digit tokens, averaged over prompts, as rouge-score; " +
          "corpus BLEU-4 on sacreBLEU's scale (0–100) with its defaults (13a tokens, uniform weights, brevity penalty, exp smoothing).",
        "",
      );
      lines.push("### Sample generations", "", ...table(["prompt", "reference", "base", "adapter"], (report.samples ?? []).map((s) => [s.prompt, s.reference, s.base, s.adapter].map(escapeCell))), "");
    }
    return lines;
  }
  const { adapter, base } = report;
  if (isCausalDetail(base)) return lines;
  lines.push(
    `Expected calibration error (\`ece\`): ${ECE_BINS} equal-width bins over the top-class probability, the size-weighted mean of each bin's |accuracy − mean confidence|.`,
    "",
    "### Per class (adapter)",
    "",
    ...table(["label", "precision", "recall", "f1", "support"], adapter.labels.map((label) => [escapeCell(label), ...["precision", "recall", "f1", "support"].map((k) => formatNumber(adapter.perClass[label][k as "f1"]))])),
    "",
    "### Confusion matrix (adapter; rows actual, columns predicted)",
    "",
    ...table(["actual \\ predicted", ...adapter.labels.map(escapeCell)], adapter.confusionMatrix.map((counts, i) => [escapeCell(adapter.labels[i]), ...counts])),
    "",
  );
  if (adapter.groups) {
    const groupRows = Object.entries(adapter.groups).map(([name, stats]) => {
      const baseStats = base.groups?.[name];
      return [escapeCell(name), stats.count, formatNumber(stats.accuracy), formatNumber(baseStats?.accuracy), formatNumber(stats.macro_f1), formatNumber(baseStats?.macro_f1), formatNumber(stats.ece), formatNumber(stats.loss)];
    });
    lines.push("### Per group", "", ...table(["group", "examples", "accuracy", "base accuracy", "macro_f1", "base macro_f1", "ece", "loss"], groupRows), "");
    const gap = adapter.largestGroupGap;
    if (gap) lines.push(`Largest gap between groups: \`${gap.metric}\` ${formatNumber(gap.gap)}, between ${gap.groups[0]} and ${gap.groups[1]}.`, "");
  }
  return lines;
}

function trainingSection(file: MetricsFile): string[] {
  const curve = file.loss_curve;
  const lines = ["## Training", "", `${file.steps} optimizer steps (${file.epochs} epoch(s) planned), ${file.tokens_seen} tokens, on the \`${file.backend}\` backend. The adapter holds step ${file.adapter_step}'s weights.`];
  if (file.early_stopping) lines.push(`Early stopping: best evaluation at step ${file.early_stopping.best_step ?? "–"}, stopped at step ${file.early_stopping.stopped_at_step ?? "– (ran to the end)"}.`);
  lines.push("");
  if (curve.length) {
    const lowest = curve.reduce((low, point) => (point.loss < low.loss ? point : low));
    lines.push(...table(["training loss", "step", "loss"], [["first", curve[0].step, formatNumber(curve[0].loss)], ["lowest", lowest.step, formatNumber(lowest.loss)], ["last", curve.at(-1)!.step, formatNumber(curve.at(-1)!.loss)]]), "");
  }
  if (file.evaluations.length) {
    const names = Object.keys(file.evaluations[0].metrics).filter((name) => !name.includes("/"));
    lines.push("Validation during training:", "", ...table(["step", ...names.map((n) => `\`${n}\``)], file.evaluations.map((e) => [e.step, ...names.map((n) => formatNumber(e.metrics[n]))])), "");
  }
  return lines;
}

function limitations(file: MetricsFile, quality: DataQuality | undefined): string[] {
  const notes: string[] = [];
  if (!file.validation_examples) notes.push("Nothing was evaluated: there was no validation data.");
  else if (file.validation_examples < 100) notes.push(`The validation set is small (${file.validation_examples} examples): one example moves accuracy by ${formatNumber(1 / file.validation_examples)}.`);
  const worse = ["loss", "accuracy", "macro_f1", "exact_match", "rouge_l", "bleu"].filter((name) =>
    file.metrics[name] !== undefined && file.baseline[name] !== undefined && (name === "loss" ? file.metrics[name] > file.baseline[name] : file.metrics[name] < file.baseline[name]),
  );
  if (worse.length) notes.push(`The adapter does worse than the base model on ${worse.map((n) => `\`${n}\``).join(", ")}.`);
  const adapter = file.report?.adapter;
  if (adapter && !isCausalDetail(adapter)) {
    if (adapter.ece >= ECE_WARNING) notes.push(`Scores are not calibrated probabilities: expected calibration error ${formatNumber(adapter.ece)}.`);
    const gap = adapter.largestGroupGap;
    if (gap && gap.gap >= GROUP_GAP_WARNING) notes.push(`**It serves groups unequally**: \`${gap.metric}\` differs by ${formatNumber(gap.gap)} between ${gap.groups[0]} and ${gap.groups[1]}.`);
  }
  if (file.train_examples_without_targets) notes.push(`${file.train_examples_without_targets} training example(s) were too long to learn from at this maxSeqLength.`);
  const serious = quality?.findings.filter((f) => f.severity !== "info") ?? [];
  if (serious.length) notes.push(`The training data has ${serious.length} data-quality finding(s) above: ${serious.map((f) => f.code).join(", ")}.`);
  notes.push("It learned only what the training data shows; inputs unlike that data, and any bias in it, carry over to its outputs.");
  return ["## Limitations", "", ...notes.map((note) => `- ${note}`), ""];
}

/** What a card's front matter holds beyond the base model's: extra tags, and the model-index when something was evaluated. */
export interface FrontMatterInput {
  adapter: Adapter;
  modelDir: string | undefined;
  extraTags: string[];
  modelIndex?: { name: string; dataset: string; metrics: Record<string, number> };
}

/** The YAML front matter of a Hugging Face model card, between its `---` lines. */
export async function frontMatterLines({ adapter, modelDir, extraTags, modelIndex }: FrontMatterInput): Promise<string[]> {
  const pipelineTag = pipelineTagOf(adapter);
  const [license, architecture] = modelDir ? await Promise.all([baseLicense(modelDir), modelType(modelDir)]) : [undefined, undefined];
  const frontMatter = {
    base_model: adapter.baseModelName,
    library_name: "peft",
    pipeline_tag: pipelineTag,
    ...(license ? { license } : {}),
    tags: ["lora", "peft", ...extraTags, pipelineTag, ...(architecture ? [architecture] : [])],
    ...(modelIndex
      ? {
          "model-index": [
            {
              name: modelIndex.name,
              results: [{ task: { type: pipelineTag }, dataset: { name: modelIndex.dataset, type: "validation" }, metrics: Object.entries(modelIndex.metrics).map(([name, value]) => ({ type: name, name, value })) }],
            },
          ],
        }
      : {}),
  };
  return ["---", ...toYaml(frontMatter), "---"];
}

const pipelineTagOf = (adapter: Adapter) => (adapter.taskType === "CAUSAL_LM" ? "text-generation" : "text-classification");

/** What the adapter turns its base model into, in words. */
export function taskPhrase(adapter: Adapter, labels: string[]): string {
  return adapter.taskType === "CAUSAL_LM" ? "a causal language model" : `a ${labels.length}-class text classifier (labels: ${labels.join(", ")})`;
}

/** The card's "Intended use" section: what for, and how to load it with PEFT. */
export function intendedUseLines(adapter: Adapter, labels: string[], likeWhat: string): string[] {
  const causal = adapter.taskType === "CAUSAL_LM";
  const loadClass = causal ? "AutoModelForCausalLM" : "AutoModelForSequenceClassification";
  const loadArgs = causal ? "" : `, num_labels=${labels.length}`;
  return [
    "## Intended use",
    "",
    `For ${causal ? "generating text" : "classifying text"} like ${likeWhat}, loaded on top of the same base model. ` +
      "Check it on your own data before relying on it, and keep a person in the loop for decisions about people.",
    "",
    "```python",
    "from peft import PeftModel",
    `from transformers import ${loadClass}`,
    `base = ${loadClass}.from_pretrained("${adapter.baseModelName}"${loadArgs})`,
    `model = PeftModel.from_pretrained(base, "path/to/this/folder")`,
    "```",
    "",
  ];
}

export async function modelCard({ adapter, metricsFile: file, modelDir, dataQuality }: ModelCardInput): Promise<string> {
  const modelIndex = file.validation_examples ? { name: `${path.basename(adapter.baseModelName)}-lora`, dataset: "validation set", metrics: file.metrics } : undefined;
  return [
    ...(await frontMatterLines({ adapter, modelDir, extraTags: [], modelIndex })),
    "",
    `# LoRA adapter for ${adapter.baseModelName}`,
    "",
    `A LoRA adapter (rank ${adapter.settings.r}, alpha ${adapter.settings.alpha}, on ${adapter.settings.targetModules.join(", ")}) that turns \`${adapter.baseModelName}\` into ${taskPhrase(adapter, file.labels)}. ` +
      "`metrics.json` beside this card holds every number below exactly.",
    "",
    ...intendedUseLines(adapter, file.labels, "its training data's"),
    ...limitations(file, dataQuality),
    ...dataSection(file, dataQuality),
    ...settingsSection(file.settings),
    ...evaluationSection(file),
    ...trainingSection(file),
  ].join("\n");
}

export async function writeModelCard(dir: string, input: ModelCardInput): Promise<void> {
  await writeFile(path.join(dir, "README.md"), await modelCard(input));
}
