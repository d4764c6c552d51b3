// One job's page: its summary and controls (pause, resume, cancel, adapter download), live
// training and validation curves fed by the job's Server-Sent Events, the evaluation once it has
// succeeded, its checkpoints and its event log.
import { api, followEvents, saveDownload } from "./api.js";
import { lineChart } from "./charts.js";
import { announce, badge, errorBox, formatBytes, formatDuration, formatTime, h, table } from "./dom.js";
import { evaluationSection } from "./evaluation.js";

const SHOWN_EVENTS = 500;
const FINISHED = ["succeeded", "failed", "cancelled"];

function summary(job) {
  const progress = job.progress ?? {};
  const rows = [
    ["Status", badge(job.status)],
    ["Progress", typeof progress.percent === "number" ? `${progress.step} / ${progress.totalSteps} steps (${progress.percent}%)` : "not started"],
    ["ETA", job.estimatedFinish ? formatDuration(Math.max(0, new Date(job.estimatedFinish).getTime() - Date.now())) : ""],
    ["Latest loss", typeof progress.loss === "number" ? progress.loss.toFixed(4) : ""],
    ["Base model", job.baseModelId],
    ["Task", job.task],
    ["Attempts", `${job.attempts} of ${job.maxAttempts ?? "?"}`],
    ["Created", formatTime(job.createdAt)],
    ["Started", formatTime(job.startedAt)],
    ["Finished", formatTime(job.finishedAt)],
    job.pauseRequestedAt ? ["Pause", "requested; the worker is saving a checkpoint"] : undefined,
    job.error ? ["Error", `${job.error.message ?? ""} (${job.error.code ?? "error"})`] : undefined,
  ].filter(Boolean);
  return h("dl", { class: "summary", id: "job-summary" }, rows.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

export async function jobView(main, jobId, signal) {
  let job = await api(`/v1/jobs/${jobId}`, { signal });
  const summaryHolder = h("div");
  const actions = h("div", { class: "toolbar", role: "group", "aria-label": "Job actions" });
  const feedback = h("div", { id: "action-feedback" });
  const charts = h("div", { class: "charts" });
  const evaluation = h("section", { "aria-labelledby": "evaluation-title", id: "evaluation-section" });
  const checkpoints = h("div", { id: "checkpoints" });
  const log = h("ol", { class: "events", id: "events-log", tabindex: "0", "aria-label": "Event log" });
  main.replaceChildren(
    h("h2", {}, `Job ${jobId}`),
    summaryHolder,
    actions,
    feedback,
    h("h3", {}, "Curves"),
    charts,
    evaluation,
    h("h3", {}, "Checkpoints"),
    checkpoints,
    h("h3", {}, "Events"),
    log,
  );
  const training = lineChart(charts, { id: "train-chart", title: "Training loss", seriesNames: ["loss"], yLabel: "loss" });
  let validation;

  async function act(action) {
    feedback.replaceChildren();
    try {
      job = await api(`/v1/jobs/${jobId}/${action}`, { method: "POST", signal });
      announce(`job ${job.status}`);
      render();
    } catch (error) {
      if (!signal.aborted) feedback.replaceChildren(errorBox(error));
    }
  }

  async function download() {
    feedback.replaceChildren();
    try {
      await saveDownload(`/v1/adapters/${job.adapterId}/download`, `adapter-${job.adapterId}.tar.gz`);
      announce("adapter downloaded");
    } catch (error) {
      feedback.replaceChildren(errorBox(error));
    }
  }

  function render() {
    summaryHolder.replaceChildren(summary(job));
    const finished = FINISHED.includes(job.status);
    const button = (label, onclick, enabled, extra = {}) => h("button", { type: "button", onclick, disabled: !enabled, ...extra }, label);
    actions.replaceChildren(
      button("Pause", () => act("pause"), ["queued", "running"].includes(job.status) && !job.pauseRequestedAt, { class: "secondary" }),
      button("Resume", () => act("resume"), job.status === "paused" || Boolean(job.pauseRequestedAt), { class: "secondary" }),
      button("Cancel", () => act("cancel"), !finished && job.status !== "cancelling", { class: "secondary" }),
      button("Download adapter", download, Boolean(job.adapterId), { id: "download-adapter" }),
    );
  }

  async function refreshCheckpoints() {
    const { data } = await api(`/v1/jobs/${jobId}/checkpoints`, { signal });
    checkpoints.replaceChildren(
      table(
        "Checkpoints",
        [
          { label: "Step", value: (checkpoint) => String(checkpoint.step), number: true },
          { label: "Size", value: (checkpoint) => formatBytes(checkpoint.sizeBytes), number: true },
          { label: "Saved", value: (checkpoint) => formatTime(checkpoint.createdAt) },
          {
            label: "Download",
            value: (checkpoint) =>
              h(
                "button",
                {
                  type: "button",
                  class: "secondary",
                  onclick: () => saveDownload(`/v1/jobs/${jobId}/checkpoints/${checkpoint.step}/download`, `checkpoint-${jobId}-step-${checkpoint.step}.tar.gz`).catch((error) => feedback.replaceChildren(errorBox(error))),
                },
                `step ${checkpoint.step}`,
              ),
          },
        ],
        data,
        FINISHED.includes(job.status) ? "No checkpoints are kept for this job." : "No checkpoint yet.",
      ),
    );
  }

  async function refreshEvaluation() {
    if (job.status !== "succeeded") return evaluation.replaceChildren();
    const adapter = job.adapterId ? await api(`/v1/adapters/${job.adapterId}`, { signal }) : undefined;
    evaluation.replaceChildren(h("h3", { id: "evaluation-title" }, "Evaluation: adapter against base model"), evaluationSection(job, adapter));
  }

  // Many events arrive together when a page opens on a running job: one job read per burst.
  let refreshQueued;
  function refreshSoon() {
    if (refreshQueued) return;
    refreshQueued = setTimeout(async () => {
      refreshQueued = undefined;
      try {
        job = await api(`/v1/jobs/${jobId}`, { signal });
        render();
      } catch (error) {
        if (!signal.aborted) feedback.replaceChildren(errorBox(error));
      }
    }, 500);
  }
  signal.addEventListener("abort", () => clearTimeout(refreshQueued));

  function onEvent(event) {
    log.append(h("li", { class: event.level }, `${formatTime(event.createdAt)} ${event.type}: ${event.message}`));
    while (log.childElementCount > SHOWN_EVENTS) log.firstElementChild.remove();
    const data = event.data ?? {};
    if (event.type === "step" && typeof data.step === "number") training.add(data.step, { loss: data.loss });
    if (event.type === "evaluation" && typeof data.step === "number" && data.metrics) {
      validation ??= lineChart(charts, {
        id: "validation-chart",
        title: "Validation metrics",
        seriesNames: Object.keys(data.metrics).filter((name) => !name.includes("/")).sort(),
      });
      validation.add(data.step, data.metrics);
    }
    if (event.type === "checkpoint") refreshCheckpoints().catch(() => {});
    refreshSoon();
  }

  async function onEnd() {
    job = await api(`/v1/jobs/${jobId}`, { signal });
    render();
    await Promise.all([refreshCheckpoints(), refreshEvaluation()]);
    announce(`job ${job.status}`);
  }

  render();
  await Promise.all([refreshCheckpoints(), refreshEvaluation()]);
  followEvents(jobId, { onEvent, onEnd: () => onEnd().catch((error) => signal.aborted || feedback.replaceChildren(errorBox(error))), signal }).catch(
    (error) => signal.aborted || feedback.replaceChildren(errorBox(error)),
  );
}
