// `npm run demo`: the README's main job against a running service (`npm start`). Uploads the
// bundled example dataset, fine-tunes the bundled tiny DistilBERT, shows live progress from
// the event stream, downloads the adapter and prints its evaluation and a prediction.
// Environment: API_URL (default http://127.0.0.1:8080), BOOTSTRAP_API_KEY (required),
// MODELS_DIR (where the service looks for models; the tiny model is created there if
// missing), DEMO_OUT (where the adapter is saved; default var/demo).
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
// The tiny model and the event-stream reader are the ones the tests use: the demo runs the same
// job the end-to-end tests run, so it shares their fixtures instead of keeping copies.
import { makeFixtures } from "../test/fixtures/make-fixtures.ts";
import { serverSentEvents } from "../test/helpers/sse.ts";

const repoRoot = path.resolve(import.meta.dirname, "..");
const apiUrl = (process.env.API_URL ?? "http://127.0.0.1:8080").replace(/\/$/, "");
const apiKey = process.env.BOOTSTRAP_API_KEY;
const modelsDir = path.resolve(process.env.MODELS_DIR ?? "var/models");
const outDir = path.resolve(process.env.DEMO_OUT ?? "var/demo");
const MODEL_ID = "tiny-distilbert";
const DATASET = path.join(repoRoot, "examples/sentiment.jsonl");
const SAMPLES = ["the movie was excellent", "this film is boring and dull"];

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n`);
  process.exit(1);
}

async function call<T>(method: string, route: string, body?: unknown): Promise<T> {
  let response: Response;
  try {
    response = await fetch(`${apiUrl}${route}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body instanceof FormData || body === undefined ? {} : { "content-type": "application/json" }) },
      body: body instanceof FormData ? body : body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    fail(`cannot reach the service at ${apiUrl} (${(error as Error).message}); start it with \`npm start\``);
  }
  const text = await response.text();
  if (!response.ok) fail(`${method} ${route} answered ${response.status}: ${text}`);
  return JSON.parse(text) as T;
}

/** The bundled tiny model, generated once into MODELS_DIR where the service finds it. */
async function ensureTinyModel(): Promise<void> {
  const target = path.join(modelsDir, MODEL_ID);
  if (existsSync(path.join(target, "model.safetensors"))) return;
  console.log(`creating the tiny model in ${target}`);
  const scratch = await fs.mkdtemp(path.join(os.tmpdir(), "lora-demo-fixtures-"));
  await makeFixtures(scratch);
  await fs.mkdir(modelsDir, { recursive: true });
  await fs.cp(path.join(scratch, "distilbert-cls"), target, { recursive: true });
  await fs.rm(scratch, { recursive: true, force: true });
}

function progressBar(step: number, total: number, width = 30): string {
  const filled = total > 0 ? Math.round((width * step) / total) : 0;
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${String(Math.round((100 * step) / Math.max(total, 1))).padStart(3)}%`;
}

interface JobEvent {
  type: string;
  message: string;
  data: Record<string, number> | null;
}

/** Follows the job's Server-Sent Events until the `end` event; returns the final status. */
async function follow(jobId: string): Promise<string> {
  const response = await fetch(`${apiUrl}/v1/jobs/${jobId}/events`, { headers: { authorization: `Bearer ${apiKey}`, accept: "text/event-stream" } });
  if (!response.ok || !response.body) fail(`the event stream answered ${response.status}`);
  const interactive = process.stdout.isTTY;
  let barShown = false;
  const say = (line: string) => {
    process.stdout.write(`${barShown && interactive ? "\r\x1b[2K" : ""}${line}\n`);
    barShown = false;
  };
  for await (const { event: name, data } of serverSentEvents(response.body)) {
    if (!data) continue;
    if (name === "end") {
      if (barShown) process.stdout.write("\n");
      return (JSON.parse(data) as { status: string }).status;
    }
    const event = JSON.parse(data) as JobEvent;
    if (event.type === "step" && event.data) {
      const { step, totalSteps, loss, etaMs, tokensPerSecond } = event.data;
      const line = `${progressBar(step, totalSteps)} step ${step}/${totalSteps}  loss ${loss.toFixed(4)}  ${tokensPerSecond} tok/s  eta ${Math.ceil(etaMs / 1000)} s`;
      if (interactive) {
        process.stdout.write(`\r\x1b[2K${line}`);
        barShown = true;
      } else say(line);
    } else if (event.type !== "checkpoint") {
      say(`• ${event.type}: ${event.message}`);
    }
  }
  fail("the event stream ended early");
}

/** Waits up to 30 s for a service that is still starting. */
async function waitUntilReady(): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const ready = await fetch(`${apiUrl}/readyz`).then(
      (response) => response.ok,
      () => false,
    );
    if (ready) return;
    if (Date.now() > deadline) fail(`the service at ${apiUrl} is not ready; start it with \`npm start\``);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function main(): Promise<void> {
  if (!apiKey) fail("set BOOTSTRAP_API_KEY to the key the service was started with");
  await ensureTinyModel();
  await waitUntilReady();
  const models = await call<{ data: { id: string }[] }>("GET", "/v1/models");
  if (!models.data.some((model) => model.id === MODEL_ID)) {
    // An unknown id makes the service look at its model directory again.
    await call("GET", `/v1/models/${MODEL_ID}`);
  }

  const upload = new FormData();
  upload.append("file", new Blob([await fs.readFile(DATASET)]), path.basename(DATASET));
  const dataset = await call<{ id: string; rows: number }>("POST", "/v1/datasets", upload);
  console.log(`uploaded ${path.basename(DATASET)}: ${dataset.rows} rows (dataset ${dataset.id})`);

  const job = await call<{ id: string }>("POST", "/v1/jobs", {
    baseModel: MODEL_ID,
    trainDatasetId: dataset.id,
    validationSplit: 0.2,
    lora: { r: 8, alpha: 16, dropout: 0.05, targetModules: ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"] },
    hyperparameters: { epochs: 10, batchSize: 8, learningRate: 0.005, maxSeqLength: 32, seed: 42, evalEverySteps: 50 },
  });
  console.log(`job ${job.id} submitted; following its events`);
  const status = await follow(job.id);
  const finished = await call<{ status: string; adapterId: string | null; error: { message: string } | null }>("GET", `/v1/jobs/${job.id}`);
  if (status !== "succeeded" || !finished.adapterId) fail(`the job ended ${finished.status}: ${finished.error?.message ?? "no adapter"}`);

  const adapterId = finished.adapterId;
  const download = await fetch(`${apiUrl}/v1/adapters/${adapterId}/download`, { headers: { authorization: `Bearer ${apiKey}` } });
  if (!download.ok) fail(`download answered ${download.status}`);
  const archive = Buffer.from(await download.arrayBuffer());
  const sha256 = createHash("sha256").update(archive).digest("hex");
  if (download.headers.get("etag") !== `"${sha256}"`) fail("the downloaded adapter does not match its ETag");
  await fs.mkdir(outDir, { recursive: true });
  const file = path.join(outDir, `adapter-${adapterId}.tar.gz`);
  await fs.writeFile(file, archive);
  console.log(`\nadapter saved to ${file} (${archive.length} bytes, sha256 ${sha256.slice(0, 16)}…)`);

  const adapter = await call<{ metrics: { metrics: Record<string, number>; baseline: Record<string, number> } }>("GET", `/v1/adapters/${adapterId}`);
  console.log("\nevaluation on the held-out split    base model    fine-tuned");
  for (const metric of ["accuracy", "macro_f1", "ece", "loss"]) {
    const base = adapter.metrics.baseline[metric];
    const tuned = adapter.metrics.metrics[metric];
    console.log(`  ${metric.padEnd(33)} ${base.toFixed(4).padStart(10)}    ${tuned.toFixed(4).padStart(10)}`);
  }

  const predicted = await call<{ predictions: { label: string; score: number }[] }>("POST", `/v1/adapters/${adapterId}/predict`, { inputs: SAMPLES });
  console.log("\nprediction");
  for (const [index, text] of SAMPLES.entries()) {
    const { label, score } = predicted.predictions[index];
    console.log(`  "${text}" → ${label} (${score.toFixed(3)})`);
  }
}

await main();
