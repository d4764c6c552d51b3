// The CLI's `sweep` and `compose` commands, engine-side and offline like `train`: a sweep trains one
// adapter per rank here, one after another, and applies the same pick rule as POST /v1/sweeps
// (sweep-pick.ts); compose combines adapter folders as POST /v1/adapters/compose does, without
// evaluating (evaluation needs each source's data: the service's composition job does it).
import { stat } from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import type { Config } from "../common/config.ts";
import { numberFlag, required, settingFlagOptions, settingsFromFlags, startBackend, UsageError } from "./cli-flags.ts";
import { COMPOSITION_TYPES, composeAdapters, loadAdapter, LOWER_IS_BETTER, pickSmallestWithinTolerance, safetensorsElementCount, train, type CompositionType } from "./index.ts";
import { saveComposedAdapter } from "./composition-card.ts";

const numberList = (text: string, flag: string) =>
  text.split(",").map((item) => {
    const value = Number(item);
    if (item.trim() === "" || !Number.isFinite(value)) throw new UsageError(`--${flag}: "${item}" is not a number`);
    return value;
  });

export async function runSweep(args: string[], config: Config): Promise<void> {
  const { values } = parseArgs({
    args,
    options: {
      model: { type: "string" }, data: { type: "string" }, validation: { type: "string" }, "validation-split": { type: "string" }, out: { type: "string" },
      ranks: { type: "string", default: "2,4,8,16,32" }, "alpha-policy": { type: "string", default: "2r" }, metric: { type: "string" },
      tolerance: { type: "string" }, backend: { type: "string" }, ...settingFlagOptions(),
    },
  });
  if (!values.validation && !values["validation-split"]) throw new UsageError("a sweep compares validation metrics: give --validation or --validation-split");
  if (values["alpha-policy"] !== "2r" && values["alpha-policy"] !== "fixed") throw new UsageError("--alpha-policy is 2r or fixed (fixed: every rank uses --lora-alpha)");
  const ranks = numberList(values.ranks!, "ranks");
  const tolerance = numberFlag(values, "tolerance", 0.01);
  const outRoot = required(values, "out");
  const settings = settingsFromFlags(values);
  await startBackend(values.backend, config);
  const rows = [];
  for (const r of ranks) {
    const outDir = path.join(outRoot, `r-${r}`);
    const started = Date.now();
    const lora = { ...settings.lora, r, ...(values["alpha-policy"] === "2r" ? { alpha: 2 * r } : {}) };
    process.stderr.write(`rank ${r}: training into ${outDir}\n`);
    const result = await train({ modelDir: required(values, "model"), trainFile: required(values, "data"), validationFile: values.validation, validationSplit: numberFlag(values, "validation-split"), outDir, lora, hyper: settings.hyper });
    const weights = path.join(outDir, "adapter_model.safetensors");
    rows.push({ rank: r, alpha: lora.alpha ?? null, adapterDir: outDir, trainableParameters: await safetensorsElementCount(weights), adapterBytes: (await stat(weights)).size, trainingMs: Date.now() - started, metrics: result.metrics });
  }
  const causal = rows.some((row) => "perplexity" in row.metrics);
  const metric = values.metric ?? (causal ? "loss" : "macro_f1");
  const pick = pickSmallestWithinTolerance(
    rows.map((row) => ({ jobId: row.adapterDir, rank: row.rank, targetModules: settings.lora.targetModules ?? ["default"], size: row.trainableParameters, value: row.metrics[metric] })),
    metric,
    !LOWER_IS_BETTER.includes(metric),
    tolerance,
  );
  process.stdout.write(JSON.stringify({ metric, tolerance, table: rows, pick: pick ? { adapterDir: pick.jobId, reason: pick.reason } : null }, null, 2) + "\n");
}

export async function runCompose(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    options: { adapter: { type: "string", multiple: true }, weights: { type: "string" }, type: { type: "string", default: "svd" }, "svd-rank": { type: "string" }, out: { type: "string" } },
  });
  const dirs = values.adapter ?? [];
  if (dirs.length === 0) throw new UsageError("give --adapter DIR once per source adapter");
  if (!(COMPOSITION_TYPES as readonly string[]).includes(values.type!)) throw new UsageError(`--type is one of ${COMPOSITION_TYPES.join(", ")}`);
  const weights = values.weights ? numberList(values.weights, "weights") : dirs.map(() => 1);
  const sources = await Promise.all(dirs.map((dir) => loadAdapter(dir)));
  const composed = composeAdapters(sources, { type: values.type as CompositionType, weights, svdRank: numberFlag(values, "svd-rank") });
  const composition = { type: sources.length === 1 ? "linear" : values.type!, weights, svdRank: numberFlag(values, "svd-rank") ?? null, sources: dirs.length };
  await saveComposedAdapter(required(values, "out"), { adapter: composed, metrics: { composition, metrics: {}, baseline: {} }, sources: sources.map((adapter, index) => ({ name: dirs[index], adapter })) });
  process.stdout.write(`composed adapter (r=${composed.settings.r}) written to ${values.out}\n`);
}
