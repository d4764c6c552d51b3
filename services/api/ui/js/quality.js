// A dataset's quality report as GET /v1/datasets/:id gives it (services/api/README.md, "Data
// quality"): {version, examples, findings: [{code, severity: "blocking" | "warning", count, lines,
// message}], stats: {characters, labelCounts, tokens?, nearDuplicates}}. Datasets uploaded before
// reports existed have none, and then nothing is shown.
import { formatNumber, h, table } from "./dom.js";

const SEVERITY_ORDER = ["blocking", "warning"];

/** One row per length summary (characters; tokens in a job's preflight): min, median, p90, max, mean. */
function lengthRows(stats) {
  const rows = stats.characters && typeof stats.characters === "object" ? [["Characters", stats.characters]] : [];
  if (stats.tokens && typeof stats.tokens === "object") rows.push([`Tokens (${stats.tokens.model})`, stats.tokens]);
  return rows;
}

export function qualityReport(report) {
  if (!report || typeof report !== "object") return undefined;
  const findings = (Array.isArray(report.findings) ? report.findings : [])
    .filter((finding) => finding && typeof finding === "object")
    .sort((a, b) => SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity));
  // `lines` lists at most 20; `count` counts them all.
  const lines = (finding) => (Array.isArray(finding.lines) ? finding.lines.join(", ") + (finding.count > finding.lines.length ? ", …" : "") : "");
  const stats = report.stats && typeof report.stats === "object" ? report.stats : {};
  const near = stats.nearDuplicates;
  return h(
    "section",
    { id: "quality-report", "aria-labelledby": "quality-title" },
    h("h4", { id: "quality-title" }, `Quality report${typeof report.examples === "number" ? ` (${report.examples} examples)` : ""}`),
    table(
      "Quality findings",
      [
        { label: "Severity", value: (finding) => String(finding.severity ?? "") },
        { label: "Code", value: (finding) => String(finding.code ?? "") },
        { label: "Count", value: (finding) => formatNumber(finding.count), number: true },
        { label: "Lines", value: lines },
        { label: "Finding", value: (finding) => String(finding.message ?? "") },
      ],
      findings,
      "No findings: the dataset looks clean.",
    ),
    lengthRows(stats).length
      ? table(
          "Example lengths",
          [{ label: "Measure", value: ([name]) => name }, ...["min", "p50", "p90", "max", "mean"].map((field) => ({ label: field === "p50" ? "median" : field, value: ([, summary]) => formatNumber(summary[field]), number: true }))],
          lengthRows(stats),
        )
      : undefined,
    near && typeof near === "object" ? h("p", { class: "muted", id: "quality-near-duplicates" }, `Near duplicates: ${near.method}, Jaccard ≥ ${near.jaccard}, ${near.examplesCompared} examples compared.`) : undefined,
  );
}
