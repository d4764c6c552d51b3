// The evaluation of a finished job: the adapter against the untouched base model. The table of
// numbers comes from the flat maps every adapter carries (the adapter's {metrics, baseline}, else the
// job's flat metrics); the structured report (job.metrics.report, docs/adapter-format.md) adds what
// only it has: confusion matrices and per-class tables for classifiers, generation scores and sample
// generations for causal LMs. A missing or differently shaped part is skipped, never an error.
import { formatNumber, h, table } from "./dom.js";

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const numbersOf = (detail) => (isObject(detail) ? Object.fromEntries(Object.entries(detail).filter(([, value]) => typeof value === "number")) : {});

/** metric | adapter | base | change, over the union of both maps' metric names. */
function comparisonTable(caption, adapter, base) {
  const names = [...new Set([...Object.keys(adapter), ...Object.keys(base)])].sort();
  const change = (name) => (typeof adapter[name] === "number" && typeof base[name] === "number" ? adapter[name] - base[name] : undefined);
  return table(
    caption,
    [
      { label: "Metric", value: (name) => name },
      { label: "Adapter", value: (name) => formatNumber(adapter[name]), number: true },
      { label: "Base model", value: (name) => formatNumber(base[name]), number: true },
      { label: "Change", value: (name) => (change(name) === undefined ? "" : (change(name) >= 0 ? "+" : "") + formatNumber(change(name))), number: true },
    ],
    names,
    "No metrics were recorded.",
  );
}

/** Rows are the actual labels, columns the predicted ones. */
function confusionMatrix(title, detail) {
  const { labels, confusionMatrix: matrix } = detail ?? {};
  if (!Array.isArray(labels) || !Array.isArray(matrix)) return undefined;
  return h(
    "figure",
    { class: "confusion" },
    h("figcaption", {}, title),
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, `${title}: rows are actual labels, columns predicted labels`),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "actual \\ predicted"), labels.map((label) => h("th", { scope: "col", class: "number" }, String(label))))),
      h(
        "tbody",
        {},
        matrix.map((row, index) =>
          h("tr", {}, h("th", { scope: "row" }, String(labels[index] ?? index)), (Array.isArray(row) ? row : []).map((count) => h("td", { class: "number" }, formatNumber(count)))),
        ),
      ),
    ),
  );
}

const PER_CLASS_FIELDS = ["precision", "recall", "f1", "support"];

/** perClass as {label: {precision, recall, f1, support}} or as [{label, ...}]. */
function perClassTable(title, perClass) {
  const rows = Array.isArray(perClass) ? perClass.filter(isObject) : isObject(perClass) ? Object.entries(perClass).map(([label, values]) => ({ label, ...values })) : [];
  if (rows.length === 0) return undefined;
  // Postgres JSON does not keep key order: the documented fields in their order, then any others.
  const present = new Set(rows.flatMap((row) => Object.keys(row)));
  const fields = [...PER_CLASS_FIELDS.filter((field) => present.has(field)), ...[...present].filter((field) => field !== "label" && !PER_CLASS_FIELDS.includes(field)).sort()];
  return h(
    "div",
    {},
    h("h4", {}, title),
    table(title, [{ label: "Label", value: (row) => String(row.label ?? "") }, ...fields.map((field) => ({ label: field, value: (row) => formatNumber(row[field]), number: true }))], rows),
  );
}

function samplesTable(samples) {
  if (!Array.isArray(samples) || samples.length === 0) return undefined;
  const text = (value) => h("pre", { class: "samples" }, typeof value === "string" ? value : JSON.stringify(value ?? ""));
  return h(
    "div",
    {},
    h("h4", {}, "Sample generations"),
    table(
      "Sample generations",
      [
        { label: "Prompt", value: (sample) => text(sample.prompt) },
        { label: "Reference", value: (sample) => text(sample.reference) },
        { label: "Base model", value: (sample) => text(sample.base) },
        { label: "Adapter", value: (sample) => text(sample.adapter) },
      ],
      samples.filter(isObject),
    ),
  );
}

/** A causal detail's generation scores ({exactMatch, rougeL, bleu}), adapter against base. */
function generationTable(report) {
  const [adapter, base] = [numbersOf(report.adapter?.generation), numbersOf(report.base?.generation)];
  if (Object.keys(adapter).length === 0) return undefined;
  return h("div", {}, h("h4", {}, "Generation scores"), comparisonTable("Generation scores: adapter against base model", adapter, base));
}

function structured(report) {
  const matrices = [confusionMatrix("Confusion matrix: adapter", report.adapter), confusionMatrix("Confusion matrix: base model", report.base)].filter(Boolean);
  return [
    matrices.length > 0 ? h("div", { class: "grid-2" }, matrices) : undefined,
    perClassTable("Per class: adapter", report.adapter?.perClass),
    perClassTable("Per class: base model", report.base?.perClass),
    generationTable(report),
    samplesTable(report.samples),
  ];
}

/**
 * The evaluation section's content for `job` and its `adapter` (GET /v1/adapters/:id, or
 * undefined): the flat numbers, adapter against base, then the structured report's detail when present.
 */
export function evaluationSection(job, adapter) {
  const report = [job.metrics?.report, adapter?.metrics?.report].find((candidate) => isObject(candidate) && (isObject(candidate.adapter) || isObject(candidate.base)));
  const flat = isObject(adapter?.metrics) && isObject(adapter.metrics.metrics) ? adapter.metrics : { metrics: numbersOf(job.metrics), baseline: {} };
  // Without flat numbers (none recorded), the report's own top-level numbers stand in.
  const [adapterNumbers, baseNumbers] = Object.keys(numbersOf(flat.metrics)).length || !report ? [numbersOf(flat.metrics), numbersOf(flat.baseline)] : [numbersOf(report.adapter), numbersOf(report.base)];
  const step = typeof flat.step === "number" ? h("p", { class: "muted" }, `The adapter holds the weights of step ${flat.step}.`) : undefined;
  return h("div", { id: "evaluation" }, [comparisonTable("Adapter against base model", adapterNumbers, baseNumbers), step, ...(report ? structured(report) : [])].filter(Boolean));
}
