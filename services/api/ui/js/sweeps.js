// A hyperparameter sweep: its table of trials and the chart the API draws (chart.svg, fetched
// with the Bearer header and shown through a blob: URL). Sweeps are a separate API feature; on an
// API without it the page says so instead of failing.
import { api, blob } from "./api.js";
import { errorBox, formatNumber, h, table } from "./dom.js";

const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);
const cell = (value) => (typeof value === "number" ? formatNumber(value) : isObject(value) || Array.isArray(value) ? JSON.stringify(value) : String(value ?? ""));

/** The sweep's rows: the first array of objects among the fields a sweep may name it by. */
function rowsOf(sweep) {
  for (const field of ["table", "trials", "rows", "jobs"]) {
    const candidate = isObject(sweep[field]) && Array.isArray(sweep[field].rows) ? sweep[field].rows : sweep[field];
    if (Array.isArray(candidate) && candidate.every(isObject)) return candidate;
  }
  return [];
}

async function sweepDetail(holder, id, signal) {
  let sweep;
  try {
    sweep = await api(`/v1/sweeps/${id}`, { signal });
  } catch (error) {
    if (error.status === 401) throw error;
    const missing = error.code === "route_not_found";
    holder.replaceChildren(missing ? h("p", { class: "muted", id: "sweeps-unavailable" }, "This API does not offer sweeps.") : errorBox(error));
    return;
  }
  const rows = rowsOf(sweep);
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const scalars = Object.entries(sweep).filter(([, value]) => !isObject(value) && !Array.isArray(value));
  const chart = h("figure", { class: "chart", id: "sweep-chart" }, h("figcaption", {}, "Sweep chart"));
  holder.replaceChildren(
    h("h3", {}, `Sweep ${id}`),
    h("dl", { class: "summary" }, scalars.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, cell(value))])),
    chart,
    table("Sweep trials", columns.map((column) => ({ label: column, value: (row) => (column === "jobId" && row.jobId ? h("a", { href: `#/jobs/${row.jobId}` }, cell(row.jobId)) : cell(row[column])), number: typeof rows[0]?.[column] === "number" })), rows, "No trials yet."),
  );
  try {
    const image = URL.createObjectURL(await blob(`/v1/sweeps/${id}/chart.svg`, { signal }));
    signal.addEventListener("abort", () => URL.revokeObjectURL(image));
    chart.append(h("img", { class: "sweep-chart", src: image, alt: `Chart of sweep ${id}: the metric of each trial` }));
  } catch (error) {
    if (!signal.aborted) chart.append(errorBox(error));
  }
}

export async function sweepsView(main, id, signal) {
  const input = h("input", { id: "sweep-id", required: true, pattern: "[0-9a-fA-F-]{36}", value: id ?? "" });
  const holder = h("section", { id: "sweep" });
  main.replaceChildren(
    h("h2", {}, "Sweeps"),
    h(
      "form",
      { class: "toolbar", onsubmit: (event) => (event.preventDefault(), (location.hash = `#/sweeps/${input.value.trim().toLowerCase()}`)) },
      h("label", { for: "sweep-id" }, "Sweep id", input),
      h("button", { type: "submit" }, "Show"),
    ),
    holder,
  );
  if (id) await sweepDetail(holder, id, signal);
  else holder.replaceChildren(h("p", { class: "muted" }, "Enter the id of a sweep to see its chart and table."));
}
