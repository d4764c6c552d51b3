// A dataset's quality report ({version, examples, findings: [{code, severity, count, lines,
// message}], stats}), when the API has one for it; older datasets and APIs have none, and then
// nothing is shown.
import { formatNumber, h, table } from "./dom.js";

const SEVERITY_ORDER = ["error", "warning", "info"];

export function qualityReport(report) {
  if (!report || typeof report !== "object") return undefined;
  const findings = (Array.isArray(report.findings) ? report.findings : [])
    .filter((finding) => finding && typeof finding === "object")
    .sort((a, b) => SEVERITY_ORDER.indexOf(a.severity) - SEVERITY_ORDER.indexOf(b.severity));
  const lines = (finding) => (Array.isArray(finding.lines) ? finding.lines.slice(0, 10).join(", ") + (finding.lines.length > 10 ? ", …" : "") : "");
  const stats = report.stats && typeof report.stats === "object" ? Object.entries(report.stats).filter(([, value]) => typeof value === "number") : [];
  return h(
    "section",
    { id: "quality-report", "aria-labelledby": "quality-title" },
    h("h4", { id: "quality-title" }, `Quality report${typeof report.examples === "number" ? ` (${report.examples} examples)` : ""}`),
    table(
      "Quality findings",
      [
        { label: "Severity", value: (finding) => String(finding.severity ?? "") },
        { label: "Finding", value: (finding) => String(finding.message ?? finding.code ?? "") },
        { label: "Code", value: (finding) => String(finding.code ?? "") },
        { label: "Count", value: (finding) => formatNumber(finding.count), number: true },
        { label: "Lines", value: lines },
      ],
      findings,
      "No findings: the dataset looks clean.",
    ),
    stats.length ? table("Quality statistics", [{ label: "Statistic", value: ([name]) => name }, { label: "Value", value: ([, value]) => formatNumber(value), number: true }], stats) : undefined,
  );
}
