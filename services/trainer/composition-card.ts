// The model card (README.md) of a composed adapter. A composition is not trained, so the trained
// adapter's card (model-card.ts) does not fit: this one says how the adapter was composed (type,
// weights, svd rank, each source) and shows, per source, the composition's evaluation on that
// source's validation set beside the base model's, every number taken from the same object as metrics.json.
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { writeFolderAtomically } from "./atomic-folder.ts";
import { CARD_DECIMALS, escapeCell, formatNumber, frontMatterLines, intendedUseLines, table, taskPhrase } from "./model-card.ts";
import { writeAdapterFiles, type Adapter } from "./peft.ts";

/** metrics.json of a composed adapter: `metrics` and `baseline` are keyed `source_<n>.<metric>`. */
export interface CompositionMetricsFile {
  labels: string[];
  composition: { type: string; weights: number[]; svdRank: number | null; sources: number };
  metrics: Record<string, number>;
  baseline: Record<string, number>;
}

export interface CompositionCardInput {
  adapter: Adapter;
  metricsFile: CompositionMetricsFile;
  /** The sources in order: a name to show (an adapter id, or a folder) and the loaded adapter. */
  sources: { name: string; adapter: Adapter }[];
  /** The base model's folder, when known: its config.json names the architecture, its README.md may state a license. */
  modelDir?: string;
}

const SOURCE_METRIC = /^source_(\d+)\.(.+)$/;

/** `source_<n>.<metric>` split into the metrics of each source, n counting from 1. */
function metricsBySource(metrics: Record<string, number>): Map<number, string[]> {
  const bySource = new Map<number, string[]>();
  for (const key of Object.keys(metrics)) {
    const match = SOURCE_METRIC.exec(key);
    if (!match) continue;
    const index = Number(match[1]);
    bySource.set(index, [...(bySource.get(index) ?? []), match[2]]);
  }
  return bySource;
}

const HOW: Record<string, string> = {
  linear: "linear: A = Σ √(wᵢ·sᵢ)·Aᵢ and B = Σ √(wᵢ·sᵢ)·Bᵢ over sources of one rank (sᵢ each source's scale); with more than one non-zero weight this is not the weighted sum of the updates (B·A has cross terms)",
  cat: "cat: the sources' A stacked by rows (each times wᵢ·sᵢ) and their B side by side, so the update is exactly Σ wᵢ·sᵢ·Bᵢ·Aᵢ",
  svd: "svd: the weighted sum of the updates Σ wᵢ·sᵢ·Bᵢ·Aᵢ, truncated to the new rank by its singular value decomposition (B = U·S, A = Vᵀ)",
};

function compositionSection({ adapter, metricsFile, sources }: CompositionCardInput): string[] {
  const { composition } = metricsFile;
  const rows = sources.map((source, index) => [
    index + 1,
    `\`${escapeCell(source.name)}\``,
    formatNumber(composition.weights[index]),
    source.adapter.settings.r,
    source.adapter.settings.alpha,
    escapeCell(source.adapter.settings.targetModules.join(", ")),
  ]);
  return [
    "## How it was composed",
    "",
    `Type \`${composition.type}\` (${HOW[composition.type] ?? composition.type}). ` +
      (composition.svdRank !== null ? `SVD rank ${composition.svdRank}. ` : "") +
      `The result has rank ${adapter.settings.r} and lora_alpha ${adapter.settings.alpha} (scale 1), on ${adapter.settings.targetModules.join(", ")}.` +
      (adapter.modulesToSave.length ? " The classifier heads are the sources' averaged with the weights normalised to sum 1." : ""),
    "",
    ...table(["source", "adapter", "weight", "r", "lora_alpha", "target modules"], rows),
    "",
  ];
}

function evaluationSection(file: CompositionMetricsFile, sources: CompositionCardInput["sources"]): string[] {
  const lines = ["## Evaluation", ""];
  const bySource = metricsBySource(file.metrics);
  if (!bySource.size) return [...lines, "It was not evaluated: no source had validation data here.", ""];
  lines.push(
    "On each source's validation set, rebuilt as that source's training built it, the composed adapter next to the untouched base model. " +
      `Values are rounded to ${CARD_DECIMALS} decimals; \`metrics.json\` holds them exactly (keys \`source_<n>.<metric>\`).`,
    "",
  );
  for (const [index, names] of [...bySource].sort(([a], [b]) => a - b)) {
    const key = (name: string) => `source_${index}.${name}`;
    const name = sources[index - 1]?.name;
    lines.push(`### Source ${index}${name ? ` (\`${escapeCell(name)}\`)` : ""}`, "");
    lines.push(...table(["metric", "adapter", "base"], names.map((metric) => [`\`${metric}\``, formatNumber(file.metrics[key(metric)]), formatNumber(file.baseline[key(metric)])])), "");
  }
  return lines;
}

function limitations(file: CompositionMetricsFile): string[] {
  const notes = ["It was composed, not trained: nothing was learned beyond what each source learned, and interference between the sources' updates is possible."];
  const worse = Object.keys(file.metrics).filter((key) => {
    const metric = SOURCE_METRIC.exec(key)?.[2];
    const [value, base] = [file.metrics[key], file.baseline[key]];
    if (base === undefined || !metric) return false;
    return ["loss", "perplexity"].includes(metric) ? value > base : ["accuracy", "macro_f1", "next_token_accuracy", "exact_match", "rouge_l", "bleu"].includes(metric) && value < base;
  });
  if (worse.length) notes.push(`It does worse than the base model on ${worse.map((n) => `\`${n}\``).join(", ")}.`);
  if (!Object.keys(file.metrics).length) notes.push("Nothing was evaluated.");
  else notes.push("It was evaluated only on its sources' validation sets; inputs unlike their training data, and any bias in it, carry over to its outputs.");
  return ["## Limitations", "", ...notes.map((note) => `- ${note}`), ""];
}

export async function compositionCard(input: CompositionCardInput): Promise<string> {
  const { adapter, metricsFile: file, modelDir } = input;
  const evaluated = Object.keys(file.metrics).length > 0;
  const modelIndex = evaluated ? { name: `${path.basename(adapter.baseModelName)}-lora-${file.composition.type}`, dataset: "source validation sets", metrics: file.metrics } : undefined;
  const task = taskPhrase(adapter, file.labels);
  return [
    ...(await frontMatterLines({ adapter, modelDir, extraTags: ["adapter-composition"], modelIndex })),
    "",
    `# Composed LoRA adapter for ${adapter.baseModelName}`,
    "",
    `A LoRA adapter composed (\`${file.composition.type}\`) from ${file.composition.sources} adapter(s), as PEFT's \`add_weighted_adapter\` composes them, that turns \`${adapter.baseModelName}\` into ${task}. ` +
      "`metrics.json` beside this card holds every number below exactly.",
    "",
    ...compositionSection(input),
    ...intendedUseLines(adapter, file.labels, "its sources' training data"),
    ...limitations(file),
    ...evaluationSection(file, input.sources),
  ].join("\n");
}

export async function writeCompositionCard(dir: string, input: CompositionCardInput): Promise<void> {
  await writeFile(path.join(dir, "README.md"), await compositionCard(input));
}

/** Writes the composed adapter's folder at once: the PEFT files, metrics.json and this card. */
export async function saveComposedAdapter(dir: string, input: Omit<CompositionCardInput, "metricsFile"> & { metrics: Omit<CompositionMetricsFile, "labels"> & { task?: string } }): Promise<void> {
  const metricsFile = { labels: input.adapter.labels, ...input.metrics };
  await writeFolderAtomically(dir, async (tmp) => {
    await writeAdapterFiles(tmp, input.adapter, input.metrics);
    await writeCompositionCard(tmp, { ...input, metricsFile });
  });
}
