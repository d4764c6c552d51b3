// The jobs table: newest first, filtered by status, paged with the API's cursors, and refreshed
// every few seconds while shown so that status, progress and ETA stay live.
import { api } from "./api.js";
import { badge, errorBox, formatDuration, formatTime, h, table } from "./dom.js";

const STATUSES = ["queued", "running", "paused", "cancelling", "succeeded", "failed", "cancelled"];
const PAGE_SIZE = 20;
const REFRESH_MS = 3000;

function progressCell(job) {
  const percent = job.progress?.percent;
  if (typeof percent !== "number") return "";
  return h("span", {}, h("progress", { max: 100, value: percent, "aria-label": `job ${job.id} progress` }), ` ${percent}%`);
}

function eta(job) {
  if (!job.estimatedFinish) return "";
  return formatDuration(Math.max(0, new Date(job.estimatedFinish).getTime() - Date.now()));
}

const COLUMNS = [
  { label: "Job", value: (job) => h("a", { href: `#/jobs/${job.id}` }, job.id.slice(0, 8)) },
  { label: "Status", value: (job) => badge(job.status) },
  { label: "Progress", value: progressCell },
  { label: "ETA", value: eta },
  { label: "Base model", value: (job) => job.baseModelId },
  { label: "Task", value: (job) => job.task },
  { label: "Created", value: (job) => formatTime(job.createdAt) },
];

export async function jobsView(main, signal) {
  // Cursors of the pages before this one, so Previous can go back.
  const state = { status: "", cursors: [], cursor: undefined, nextCursor: undefined };
  const select = h(
    "select",
    {
      id: "status-filter",
      onchange: () => {
        Object.assign(state, { status: select.value, cursors: [], cursor: undefined });
        load().catch(() => {});
      },
    },
    h("option", { value: "" }, "any status"),
    STATUSES.map((status) => h("option", { value: status }, status)),
  );
  const previous = h("button", { type: "button", class: "secondary", onclick: () => ((state.cursor = state.cursors.pop()), load().catch(() => {})) }, "Previous");
  const next = h("button", { type: "button", class: "secondary", onclick: () => (state.cursors.push(state.cursor), (state.cursor = state.nextCursor), load().catch(() => {})) }, "Next");
  const results = h("div", { id: "jobs-table", "aria-live": "off" });
  main.replaceChildren(
    h("h2", {}, "Jobs"),
    h("div", { class: "toolbar" }, h("label", { for: "status-filter" }, "Status", select), h("a", { href: "#/datasets" }, "Upload a dataset and start a job")),
    results,
    h("div", { class: "toolbar" }, previous, next),
  );

  let timer;
  async function load() {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (state.status) query.set("status", state.status);
    if (state.cursor) query.set("cursor", state.cursor);
    try {
      const page = await api(`/v1/jobs?${query}`, { signal });
      state.nextCursor = page.nextCursor ?? undefined;
      results.replaceChildren(table("Jobs", COLUMNS, page.data, state.status ? `No ${state.status} jobs.` : "No jobs yet."));
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 401) throw error;
      results.replaceChildren(errorBox(error));
    }
    previous.disabled = state.cursors.length === 0;
    next.disabled = !state.nextCursor;
    if (!signal.aborted) timer = setTimeout(() => load().catch(() => {}), REFRESH_MS);
  }
  signal.addEventListener("abort", () => clearTimeout(timer));
  await load();
}
