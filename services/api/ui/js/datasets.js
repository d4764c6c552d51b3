// Datasets: upload a JSONL file with a progress bar, list what was uploaded, show one dataset's
// statistics and quality report (when the API provides one), and start a job on it.
import { api, upload } from "./api.js";
import { announce, errorBox, formatBytes, formatTime, h, table } from "./dom.js";
import { newJobForm } from "./new-job.js";
import { qualityReport } from "./quality.js";

export async function datasetsView(main, signal) {
  const fileInput = h("input", { id: "dataset-file", type: "file", accept: ".jsonl,application/jsonl,application/x-ndjson", required: true });
  const bar = h("progress", { id: "upload-progress", max: 1, value: 0, "aria-label": "Upload progress", hidden: true });
  const feedback = h("div", { id: "upload-feedback", "aria-live": "polite" });
  const list = h("div", { id: "datasets-table" });
  const detail = h("section", { id: "dataset-detail", "aria-live": "polite" });
  const jobForm = h("section", { id: "new-job" });

  async function onUpload(event) {
    event.preventDefault();
    const file = fileInput.files[0];
    if (!file) return;
    feedback.replaceChildren();
    bar.hidden = false;
    bar.value = 0;
    try {
      const dataset = await upload("/v1/datasets", file, (fraction) => (bar.value = fraction));
      bar.value = 1;
      feedback.replaceChildren(h("p", { id: "upload-done" }, `Uploaded ${dataset.name}: ${dataset.rows} rows (${dataset.format}).`));
      announce("dataset uploaded");
      await Promise.all([refreshList(), showDataset(dataset.id)]);
    } catch (error) {
      bar.hidden = true;
      // Validation errors name the offending line in their details.
      const details = (error.details ?? []).map((detail) => h("li", {}, [detail.line ? `line ${detail.line}` : detail.path, detail.message].filter(Boolean).join(": ")));
      feedback.replaceChildren(...[errorBox(error), details.length ? h("ul", {}, details) : undefined].filter(Boolean));
    }
  }

  async function refreshList() {
    const page = await api("/v1/datasets?limit=50", { signal });
    list.replaceChildren(
      table(
        "Datasets",
        [
          { label: "Name", value: (dataset) => h("button", { type: "button", class: "secondary", onclick: () => showDataset(dataset.id).catch((error) => detail.replaceChildren(errorBox(error))) }, dataset.name) },
          { label: "Format", value: (dataset) => dataset.format },
          { label: "Rows", value: (dataset) => String(dataset.rows), number: true },
          { label: "Size", value: (dataset) => formatBytes(dataset.sizeBytes), number: true },
          { label: "Uploaded", value: (dataset) => formatTime(dataset.createdAt) },
        ],
        page.data,
        "No datasets yet.",
      ),
    );
  }

  async function showDataset(id) {
    const dataset = await api(`/v1/datasets/${id}`, { signal });
    const stats = dataset.stats ?? {};
    const labels = stats.labelCounts ? Object.entries(stats.labelCounts) : [];
    detail.replaceChildren(
      ...[
      h("h3", {}, `Dataset ${dataset.name}`),
      h(
        "dl",
        { class: "summary" },
        [
          ["Id", dataset.id],
          ["Format", dataset.format],
          ["Rows", String(dataset.rows)],
          ["Length (characters)", stats.length ? `min ${stats.length.min}, median ${stats.length.p50}, max ${stats.length.max}` : ""],
          ["sha256", dataset.sha256],
        ].flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
      ),
      labels.length ? table("Label counts", [{ label: "Label", value: ([label]) => label }, { label: "Examples", value: ([, count]) => String(count), number: true }], labels) : undefined,
      qualityReport(dataset.qualityReport),
      ].filter(Boolean),
    );
    jobForm.replaceChildren(await newJobForm(dataset, signal));
  }

  main.replaceChildren(
    h("h2", {}, "Datasets"),
    h(
      "form",
      { class: "stack", id: "upload-form", onsubmit: onUpload, "aria-labelledby": "upload-title" },
      h("h3", { id: "upload-title" }, "Upload a JSONL dataset"),
      h("label", { for: "dataset-file" }, "File", fileInput),
      h("button", { type: "submit" }, "Upload"),
      bar,
      feedback,
    ),
    h("h3", {}, "Uploaded datasets"),
    list,
    detail,
    jobForm,
  );
  await refreshList();
}
