// An adapter size sweep (GET /v1/sweeps/:id): one row per child job (rank, alpha, target modules,
// trainable parameters, adapter size, training time, its metrics), the pick with the API's reason,
// and the chart the API draws (chart.svg, fetched with the Bearer header and shown through a blob: URL).
import { api, blob } from "./api.js";
import { badge, errorBox, formatBytes, formatDuration, formatNumber, formatTime, h, table } from "./dom.js";

/** The sweep's metric first, then every other metric any child reported. */
function metricNames(sweep) {
  const names = new Set(sweep.table.flatMap((row) => Object.keys(row.metrics ?? {})));
  names.delete(sweep.metric);
  return [sweep.metric, ...[...names].sort()];
}

function pickSummary(sweep) {
  const { pick } = sweep;
  const row = pick && sweep.table.find((candidate) => candidate.jobId === pick.jobId);
  return h(
    "div",
    { id: "sweep-pick" },
    h("h4", {}, "Pick"),
    pick && row
      ? h("p", {}, `Rank ${row.rank} (`, h("a", { href: `#/jobs/${pick.jobId}` }, "job"), `): ${sweep.metric} ${formatNumber(pick.value)} against the best ${formatNumber(pick.best)}.`)
      : undefined,
    h("p", { class: pick ? undefined : "muted" }, sweep.reason),
  );
}

async function sweepDetail(holder, id, signal) {
  let sweep;
  try {
    sweep = await api(`/v1/sweeps/${id}`, { signal });
  } catch (error) {
    if (error.status === 401) throw error;
    holder.replaceChildren(errorBox(error));
    return;
  }
  const metrics = metricNames(sweep);
  const summary = [
    ["Status", badge(sweep.status)],
    ["Base model", sweep.baseModel],
    ["Metric", `${sweep.metric} (${sweep.higherIsBetter ? "higher" : "lower"} is better)`],
    ["Tolerance", formatNumber(sweep.tolerance)],
    ["Created", formatTime(sweep.createdAt)],
  ];
  const chart = h("figure", { class: "chart", id: "sweep-chart" }, h("figcaption", {}, `${sweep.metric} by adapter size`));
  holder.replaceChildren(
    h("h3", {}, `Sweep ${id}`),
    h("dl", { class: "summary" }, summary.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)])),
    pickSummary(sweep),
    chart,
    table(
      "Sweep children",
      [
        { label: "Rank", value: (row) => formatNumber(row.rank), number: true },
        { label: "Alpha", value: (row) => formatNumber(row.alpha), number: true },
        { label: "Target modules", value: (row) => row.targetModules.join(", ") },
        { label: "Trainable parameters", value: (row) => formatNumber(row.trainableParameters), number: true },
        { label: "Adapter size", value: (row) => formatBytes(row.adapterBytes), number: true },
        { label: "Training time", value: (row) => formatDuration(row.trainingMs), number: true },
        ...metrics.map((name) => ({ label: name, value: (row) => formatNumber(row.metrics?.[name]), number: true })),
        { label: "Status", value: (row) => badge(row.status) },
        { label: "Job", value: (row) => h("a", { href: `#/jobs/${row.jobId}` }, row.jobId === sweep.pick?.jobId ? "picked" : "job") },
      ],
      sweep.table,
      "No children yet.",
    ),
  );
  try {
    const image = URL.createObjectURL(await blob(`/v1/sweeps/${id}/chart.svg`, { signal }));
    signal.addEventListener("abort", () => URL.revokeObjectURL(image));
    chart.append(h("img", { class: "sweep-chart", src: image, alt: `Chart of sweep ${id}: ${sweep.metric} of each child by adapter size, the pick ringed` }));
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
