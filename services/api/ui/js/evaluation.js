// The evaluation of a finished job: the adapter against the untouched base model. It renders the
// structured report when the job has one (job.metrics.report: per-model details, a confusion
// matrix for classifiers, sample generations for causal LMs) and otherwise the flat metric maps
// every adapter carries ({metrics, baseline}). Everything is read defensively: a missing or
// differently shaped part is skipped, never an error.
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

/** perClass as {label: {precision, recall, f1, support}} or as [{label, ...}]. */
function perClassTable(title, perClass) {
  const rows = Array.isArray(perClass) ? perClass.filter(isObject) : isObject(perClass) ? Object.entries(perClass).map(([label, values]) => ({ label, ...values })) : [];
  if (rows.length === 0) return undefined;
  const fields = [...new Set(rows.flatMap((row) => Object.keys(row)))].filter((field) => field !== "label");
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

function structured(report) {
  const parts = [comparisonTable("Adapter against base model", numbersOf(report.adapter), numbersOf(report.base))];
  const matrices = [confusionMatrix("Confusion matrix: adapter", report.adapter), confusionMatrix("Confusion matrix: base model", report.base)].filter(Boolean);
  if (matrices.length > 0) parts.push(h("div", { class: "grid-2" }, matrices));
  parts.push(perClassTable("Per class: adapter", report.adapter?.perClass), perClassTable("Per class: base model", report.base?.perClass), samplesTable(report.samples));
  return parts.filter(Boolean);
}

/**
 * The evaluation section's content for `job` and its `adapter` (GET /v1/adapters/:id, or
 * undefined): the structured report when present, else the flat maps.
 */
export function evaluationSection(job, adapter) {
  const report = [job.metrics?.report, adapter?.metrics?.report].find((candidate) => isObject(candidate) && (isObject(candidate.adapter) || isObject(candidate.base)));
  if (report) return h("div", { id: "evaluation" }, structured(report));
  const flat = isObject(adapter?.metrics) && isObject(adapter.metrics.metrics) ? adapter.metrics : { metrics: numbersOf(job.metrics), baseline: {} };
  const step = typeof flat.step === "number" ? h("p", { class: "muted" }, `The adapter holds the weights of step ${flat.step}.`) : undefined;
  return h("div", { id: "evaluation" }, comparisonTable("Adapter against base model", numbersOf(flat.metrics), numbersOf(flat.baseline)), step);
}
