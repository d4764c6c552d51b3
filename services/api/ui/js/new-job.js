// The form that starts a fine-tune job on a dataset. LoRA settings and hyperparameters are JSON
// objects passed as they are: the API validates them against the engine's one declaration of
// settings and answers a 400 naming the field, shown here, so the form never duplicates ranges.
import { api } from "./api.js";
import { errorBox, h } from "./dom.js";

function parseObject(text, what) {
  const trimmed = text.trim();
  if (!trimmed) return {};
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw { code: "invalid_json", message: `${what} is not JSON: ${error.message}` };
  }
  if (!value || typeof value !== "object" || Array.isArray(value)) throw { code: "invalid_json", message: `${what} must be a JSON object` };
  return value;
}

export async function newJobForm(dataset, signal) {
  const { data: models } = await api("/v1/models", { signal });
  const wantedTask = dataset.format === "classification" ? "classification" : "causal_lm";
  const usable = models.filter((model) => !Array.isArray(model.tasks) || model.tasks.includes(wantedTask));
  const model = h("select", { id: "job-model", required: true }, usable.map((entry) => h("option", { value: entry.id }, `${entry.id} (${entry.modelType ?? entry.architecture ?? ""})`)));
  const split = h("input", { id: "job-validation-split", type: "number", min: "0", max: "0.5", step: "0.05", value: "0.2" });
  const lora = h("textarea", { id: "job-lora", spellcheck: "false" }, "{}");
  const hyperparameters = h("textarea", { id: "job-hyperparameters", spellcheck: "false" }, "{}");
  const feedback = h("div", { id: "job-feedback", "aria-live": "polite" });
  const start = h("button", { type: "submit", disabled: usable.length === 0 }, "Start job");

  async function submit(event) {
    event.preventDefault();
    feedback.replaceChildren();
    // One click, one job: the button stays disabled until the API has answered.
    start.disabled = true;
    try {
      const body = {
        baseModel: model.value,
        trainDatasetId: dataset.id,
        lora: parseObject(lora.value, "LoRA settings"),
        hyperparameters: parseObject(hyperparameters.value, "Hyperparameters"),
      };
      if (Number(split.value) > 0) body.validationSplit = Number(split.value);
      const job = await api("/v1/jobs", { method: "POST", body, signal });
      location.hash = `#/jobs/${job.id}`;
    } catch (error) {
      const details = (error.details ?? []).map((detail) => h("li", {}, [detail.line ? `line ${detail.line}` : detail.path, detail.message].filter(Boolean).join(": ")));
      feedback.replaceChildren(...[errorBox(error), details.length ? h("ul", {}, details) : undefined].filter(Boolean));
      start.disabled = false;
    }
  }

  return h(
    "form",
    { class: "stack", id: "new-job-form", onsubmit: submit, "aria-labelledby": "new-job-title" },
    h("h3", { id: "new-job-title" }, `Start a fine-tune job on ${dataset.name}`),
    usable.length ? h("label", { for: "job-model" }, "Base model", model) : h("p", { class: "error" }, `No base model supports ${wantedTask}.`),
    h("label", { for: "job-validation-split" }, "Validation split (0 for none)", split),
    h("label", { for: "job-lora" }, "LoRA settings (JSON, e.g. {\"r\": 8})", lora),
    h("label", { for: "job-hyperparameters" }, "Hyperparameters (JSON, e.g. {\"epochs\": 3})", hyperparameters),
    start,
    feedback,
  );
}
