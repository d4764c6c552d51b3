// Queue health: jobs per queue state from GET /v1/queues (waiting, active, failed, ... across all
// tenants, counts only) and this tenant's jobs by status, refreshed while shown.
import { api } from "./api.js";
import { errorBox, h, table } from "./dom.js";

const REFRESH_MS = 5000;

export async function queuesView(main, signal) {
  const holder = h("div", { id: "queues" });
  main.replaceChildren(h("h2", {}, "Queue health"), holder);
  let timer;
  async function load() {
    try {
      const { queues, jobs } = await api("/v1/queues", { signal });
      const states = [...new Set(queues.flatMap((queue) => Object.keys(queue.counts)))];
      holder.replaceChildren(
        table("Jobs per queue state", [{ label: "Queue", value: (queue) => queue.name }, ...states.map((state) => ({ label: state, value: (queue) => String(queue.counts[state] ?? 0), number: true }))], queues),
        h("h3", {}, "Your jobs by status"),
        table("Your jobs by status", [{ label: "Status", value: ([status]) => status }, { label: "Jobs", value: ([, count]) => String(count), number: true }], Object.entries(jobs)),
      );
    } catch (error) {
      if (signal.aborted) return;
      if (error.status === 401) throw error;
      holder.replaceChildren(errorBox(error));
    }
    if (!signal.aborted) timer = setTimeout(() => load().catch(() => {}), REFRESH_MS);
  }
  signal.addEventListener("abort", () => clearTimeout(timer));
  await load();
}
