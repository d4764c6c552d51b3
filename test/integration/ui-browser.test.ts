// The dashboard in real headless Chromium (Debian's `chromium`, driven by playwright-core) against
// the real stack: an API, a worker process, Postgres and Redis. It signs in (and fails to with a
// wrong key), uploads a dataset, starts a job, watches the training curve gain points while the
// job is held at two checkpoints, pauses and resumes it, sees the evaluation (the job's real report)
// once it succeeds and downloads the adapter, whose bytes must equal the API's download, and shows a
// real sweep of two ranks (table, pick, chart), and the real quality report of an upload with a
// planted duplicate and label conflict. No console error may appear on any page, the wrong key's
// included, and every page is saved as a screenshot under test-output/ui/.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { STEP_REPORT_INTERVAL_MS } from "../../services/worker/job-runner.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { CheckpointHold, ServiceProcess, stopRequested, waitFor } from "../helpers/worker-harness.ts";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
/** A classifier's part of a job's `metrics.report` (docs/adapter-format.md). */
interface ClassificationDetail extends Record<string, unknown> {
  labels: string[];
  confusionMatrix: number[][];
  perClass: Record<string, { precision: number; recall: number; f1: number; support: number }>;
}
/** GET /v1/sweeps/:id, the parts shown (services/api/routes/sweeps.ts). */
interface SweepBody {
  status: string;
  metric: string;
  reason: string;
  pick: { jobId: string } | null;
  table: { jobId: string; rank: number; alpha: number; targetModules: string[]; trainableParameters: number; adapterBytes: number; trainingMs: number; metrics: Record<string, number> }[];
}
/** As the dashboard writes a number (ui/js/dom.js formatNumber), escaped for a RegExp. */
const fixed = (value: unknown) => (Number.isInteger(value) ? String(value) : (value as number).toFixed(4)).replace(".", "\\.");
const SCREENSHOTS = path.resolve(import.meta.dirname, "../../test-output/ui");
const REVIEWS = ["The soundtrack carried every quiet scene beautifully", "A tedious script that nobody could rescue", "Bright performances from a young and fearless cast", "I checked my watch four times before the halfway mark", "Warm, funny and surprisingly wise about families", "Dialogue so wooden you could build a cabin with it"];
/** Line 7 repeats line 1 (same label); line 8 is line 2's text with the other label. */
const PLANTED_QUALITY = [...REVIEWS.map((text, index) => ({ text, label: index % 2 ? "negative" : "positive" })), { text: REVIEWS[0], label: "positive" }, { text: REVIEWS[1], label: "positive" }];

describe("the dashboard in headless Chromium", () => {
  let api: TestApi;
  let fixture: TrainingFixture;
  let baseUrl: string;
  let worker: ServiceProcess | undefined;
  let browser: Browser;
  let page: Page;
  let jobId: string;
  const consoleErrors: string[] = [];
  const holds: CheckpointHold[] = [];
  const key = () => api.keys.a.replace(/^Bearer /, "");
  const screenshot = (name: string) => page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
  const points = (chart: string) => page.locator(chart).getAttribute("data-points").then(Number);
  // (No page.waitForFunction: its polling evaluates strings in the page, which the CSP forbids.)
  const oneRow = () => page.locator("#jobs-table tbody tr").nth(1).waitFor({ state: "detached" });
  const logs = () => `${worker?.log ?? "(no worker)"}\nconsole errors: ${consoleErrors.join("\n")}`;

  before(async () => {
    assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium`);
    await fs.mkdir(SCREENSHOTS, { recursive: true });
    api = await startTestApi("ui_browser", { EVENTS_POLL_INTERVAL_MS: "200" });
    fixture = await trainingFixture(api.modelsDir);
    await api.app.listen({ host: "127.0.0.1", port: 0 });
    baseUrl = `http://127.0.0.1:${(api.app.server.address() as { port: number }).port}`;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
    page.on("console", (message) => message.type() === "error" && consoleErrors.push(`${message.text()} (${message.location().url})`));
    page.on("pageerror", (error) => consoleErrors.push(`uncaught: ${error.message}`));
  });

  after(async () => {
    for (const hold of holds.splice(0)) await hold.release().catch(() => {});
    await browser?.close();
    await worker?.stop();
    await api.close();
  });

  it("shows an error for a wrong key, not a blank page", async () => {
    await page.goto(`${baseUrl}/ui/`);
    await page.getByLabel("API key").fill("not-a-key-of-this-service");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not accepted" }).waitFor();
    assert.equal(await page.locator("#nav").isHidden(), true);
    assert.match(await page.locator("#sign-in-feedback").innerText(), /unknown or revoked API key\.? \(unauthorized\)/);
    assert.equal(await page.evaluate(`sessionStorage.getItem("lora.apiKey")`), null);
    await screenshot("sign-in-wrong-key");
    // Chromium logs every 4xx answer as "Failed to load resource": the key check answers 200.
    assert.deepEqual(consoleErrors, []);
  });

  it("signs in with a key kept in sessionStorage and never in a URL", async () => {
    await page.getByLabel("API key").fill(key());
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("heading", { name: "Jobs", exact: true }).waitFor();
    await page.getByText("No jobs yet.").waitFor();
    assert.equal(await page.evaluate(`sessionStorage.getItem("lora.apiKey")`), key());
    assert.ok(!page.url().includes(key()));
    await screenshot("jobs-empty");
  });

  it("moves between sections with the keyboard, every field labelled", async () => {
    for (let presses = 0; presses < 12; presses++) {
      await page.keyboard.press("Tab");
      if ((await page.evaluate("document.activeElement?.textContent")) === "Datasets") break;
    }
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Datasets", exact: true }).waitFor();
    assert.ok(page.url().endsWith("#/datasets"));
    // (Strings run in the page: this file is compiled without the DOM's types.)
    const unlabelled = await page.evaluate(`[...document.querySelectorAll("input, select, textarea")]
      .filter((field) => field.labels.length === 0 && !field.getAttribute("aria-label")).map((field) => field.id)`);
    assert.deepEqual(unlabelled, []);
  });

  it("uploads a dataset with progress and starts a job on it", async () => {
    await page.locator("#dataset-file").setInputFiles(fixture.job.datasetFile);
    await page.getByRole("button", { name: "Upload" }).click();
    await page.locator("#upload-done").waitFor();
    assert.equal(await page.locator("#upload-progress").getAttribute("value"), "1");
    await page.locator("#new-job-form").waitFor();
    await screenshot("datasets");

    await page.getByLabel("Base model").selectOption("tiny-distilbert");
    await page.getByLabel("Validation split").fill(String(fixture.job.validationSplit));
    await page.getByLabel("LoRA settings").fill(JSON.stringify(fixture.job.lora));
    await page.getByLabel("Hyperparameters").fill(JSON.stringify({ ...fixture.job.hyperparameters, checkpointEverySteps: fixture.checkpointEverySteps }));
    await page.getByRole("button", { name: "Start job" }).click();
    await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
    jobId = page.url().split("/").at(-1)!;
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    assert.equal(row.status, "queued");
  });

  it("draws the training curve gaining points while the job trains", async () => {
    // No worker runs yet, so both holds are in place before the job's first step.
    const [first, second] = [fixture.checkpointEverySteps, 2 * fixture.checkpointEverySteps];
    holds.push(await CheckpointHold.take(api.db.url, { jobId, step: first }), await CheckpointHold.take(api.db.url, { jobId, step: second }));
    worker = ServiceProcess.worker({
      DATABASE_URL: api.db.url,
      REDIS_URL: api.config.redisUrl,
      QUEUE_PREFIX: String(api.queue.opts.prefix),
      DATA_DIR: api.config.dataDir,
      MODELS_DIR: api.modelsDir,
    });
    await holds[0].reached(60_000, logs);
    const heldAt = Date.now();
    await waitFor(async () => (await points("#train-chart")) >= 1, 30_000, logs);
    await page.locator("#job-summary .badge.running").waitFor();
    const before = await points("#train-chart");
    await screenshot("job-training");
    // Steps are written at most once per interval: once it has passed, the first step after the
    // held checkpoint is written, before the next checkpoint is.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, heldAt + STEP_REPORT_INTERVAL_MS - Date.now())));
    await holds.shift()!.release();
    await holds[0].reached(60_000, logs);
    await waitFor(async () => (await points("#train-chart")) > before, 30_000, logs);
    assert.equal((await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).status, "running", "the points came while it trained");
  });

  it("pauses the held job from its page and resumes it", async () => {
    await page.getByRole("button", { name: "Pause" }).click();
    await page.getByText("requested; the worker is saving a checkpoint").waitFor();
    // The worker has taken the request before the held checkpoint lets training go on.
    await stopRequested(worker!, "pause");
    await holds.shift()!.release();
    await page.locator("#job-summary .badge.paused").waitFor({ timeout: 60_000 });
    await screenshot("job-paused");
    await page.getByRole("button", { name: "Resume" }).click();
    await page.locator("#job-summary .badge.paused").waitFor({ state: "detached" });
    assert.notEqual((await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).status, "paused");
  });

  it("shows the evaluation once the job succeeds and downloads the API's adapter bytes", async () => {
    await page.locator("#job-summary .badge.succeeded").waitFor({ timeout: 90_000 });
    await page.locator("#evaluation table").first().waitFor();
    // The numbers the job produced: the adapter's flat metrics against the base's, then the structured
    // report's detail (docs/adapter-format.md), rendered as the API gives them.
    const get = async (route: string) => (await fetch(`${baseUrl}${route}`, { headers: { authorization: api.keys.a } })).json();
    const { metrics, adapterId } = (await get(`/v1/jobs/${jobId}`)) as { adapterId: string; metrics: { report: { adapter: ClassificationDetail; base: ClassificationDetail } } };
    const flat = ((await get(`/v1/adapters/${adapterId}`)) as { metrics: { metrics: Record<string, number>; baseline: Record<string, number> } }).metrics;
    const { adapter } = metrics.report;
    const shown = await page.locator("#evaluation").innerText();
    for (const name of ["accuracy", "macro_f1", "loss", "ece"]) {
      assert.match(shown, new RegExp(`${name}\\s+${fixed(flat.metrics[name])}\\s+${fixed(flat.baseline[name])}`), `${name} adapter vs base in\n${shown}`);
    }
    assert.match(shown, /Confusion matrix: adapter/);
    assert.match(shown, new RegExp(adapter.labels.map((label, row) => `${label}\\s+${adapter.confusionMatrix[row].join("\\s+")}`).join("\\s*\\n\\s*")));
    for (const label of adapter.labels) {
      const { precision, recall, f1, support } = adapter.perClass[label];
      assert.match(shown, new RegExp(`${label}\\s+${[precision, recall, f1, support].map(fixed).join("\\s+")}`), `per class ${label}`);
    }
    assert.ok((await points("#validation-chart")) >= 1);
    assert.ok((await page.locator("#events-log li").count()) > 0);
    await screenshot("job-succeeded");

    const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download adapter" }).click()]);
    const downloaded = await fs.readFile((await download.path())!);
    const job = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId }, include: { adapter: true } });
    const fromApi = await fetch(`${baseUrl}/v1/adapters/${job.adapter!.id}/download`, { headers: { authorization: api.keys.a } });
    assert.equal(fromApi.status, 200);
    assert.ok(downloaded.equals(Buffer.from(await fromApi.arrayBuffer())), "the dashboard's download differs from the API's");
    assert.equal(download.suggestedFilename(), `adapter-${job.adapter!.id}.tar.gz`);
  });

  it("lists the job, filters by status, and shows queue health and sweeps", async () => {
    // 20 older cancelled jobs beside the real one: two pages of 20.
    const real = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    await api.db.prisma.job.createMany({
      data: Array.from({ length: 20 }, (_, index) => ({
        tenantId: real.tenantId,
        task: real.task,
        baseModelId: real.baseModelId,
        trainDatasetId: real.trainDatasetId,
        loraConfig: {},
        hyperparameters: {},
        status: "cancelled" as const,
        createdAt: new Date(real.createdAt.getTime() - (index + 1) * 60_000),
      })),
    });
    await page.goto(`${baseUrl}/ui/#/jobs`);
    await page.locator("#jobs-table .badge.succeeded").waitFor();
    assert.equal(await page.locator("#jobs-table tbody tr").count(), 20);
    await screenshot("jobs");
    await page.getByRole("button", { name: "Next" }).click();
    await oneRow();
    assert.equal(await page.getByRole("button", { name: "Next" }).isDisabled(), true);
    await page.getByRole("button", { name: "Previous" }).click();
    await page.locator("#jobs-table .badge.succeeded").waitFor();
    await page.getByLabel("Status").selectOption("succeeded");
    await oneRow();
    await page.getByLabel("Status").selectOption("failed");
    await page.getByText("No failed jobs.").waitFor();

    await page.goto(`${baseUrl}/ui/#/queues`);
    await page.locator("#queues table").first().waitFor();
    assert.match(await page.locator("#queues").innerText(), /succeeded\s+1\s*\n\s*failed\s+0\s*\n\s*cancelled\s+20/);
    await screenshot("queues");

    await page.goto(`${baseUrl}/ui/#/sweeps`);
    await page.getByLabel("Sweep id").waitFor();
    await screenshot("sweeps");
  });

  it("shows the real quality report of an uploaded dataset: a planted duplicate and label conflict", async () => {
    await page.goto(`${baseUrl}/ui/#/datasets`);
    await page.getByRole("heading", { name: "Datasets", exact: true }).waitFor();
    const buffer = Buffer.from(PLANTED_QUALITY.map((record) => JSON.stringify(record)).join("\n") + "\n");
    await page.locator("#dataset-file").setInputFiles({ name: "planted.jsonl", mimeType: "application/jsonl", buffer });
    await page.getByRole("button", { name: "Upload" }).click();
    await page.locator("#quality-report").waitFor();
    await screenshot("dataset-quality");

    const { id } = await api.db.prisma.dataset.findFirstOrThrow({ where: { name: "planted.jsonl" } });
    const response = await fetch(`${baseUrl}/v1/datasets/${id}`, { headers: { authorization: api.keys.a } });
    const report = ((await response.json()) as { qualityReport: { findings: { code: string; severity: string; count: number; lines: number[] }[] } }).qualityReport;
    const byCode = Object.fromEntries(report.findings.map((finding) => [finding.code, finding]));
    assert.deepEqual([byCode.exact_duplicate?.count, byCode.exact_duplicate?.lines], [1, [7]], JSON.stringify(report.findings));
    assert.deepEqual([byCode.label_conflict?.count, byCode.label_conflict?.lines], [2, [2, 8]], JSON.stringify(report.findings));

    const shown = await page.locator("#quality-report").innerText();
    assert.match(shown, new RegExp(`Quality report \\(${PLANTED_QUALITY.length} examples\\)`));
    // Every finding of the API's report, as a row: severity, code, count, line numbers.
    const rows = page.locator("#quality-report table").first().locator("tbody tr");
    assert.equal(await rows.count(), report.findings.length);
    const cells = await Promise.all(report.findings.map(async (_, index) => (await rows.nth(index).innerText()).split("\t").slice(0, 4).map((cell) => cell.trim()).join("|")));
    for (const { severity, code, count, lines } of report.findings) assert.ok(cells.includes(`${severity}|${code}|${count}|${lines.join(", ")}`), `${code} in ${cells}`);
    assert.match(await page.locator("#quality-near-duplicates").innerText(), /MinHash/);
  });

  it("renders a causal report's generations, a shape no job here produces", async () => {
    // This test trains a classifier: a causal LM's report (its documented shape) is rendered by the
    // module itself, in this page, under its CSP. (The classifier's real report is checked on the
    // job's page above.)
    await page.goto(`${baseUrl}/ui/#/queues`);
    await page.locator("#queues table").first().waitFor();
    await page.evaluate(`(async () => {
      const { evaluationSection } = await import("/ui/js/evaluation.js");
      const detail = (loss, output) => ({ loss, perplexity: Math.exp(loss), tokenAccuracy: 0.5,
        generation: { exactMatch: output === "hello" ? 1 : 0, rougeL: output === "hello" ? 1 : 0, bleu: 0, samples: [{ prompt: "Say hi:", reference: "hello", output }] } });
      const report = { adapter: detail(1.5, "hello"), base: detail(2, "hmm"), samples: [{ prompt: "Say hi:", reference: "hello", base: "hmm", adapter: "hello" }] };
      const flat = (loss, match) => ({ loss, perplexity: Math.exp(loss), next_token_accuracy: 0.5, exact_match: match, rouge_l: match, bleu: 0 });
      document.getElementById("content").replaceChildren(
        evaluationSection({ status: "succeeded", metrics: { ...flat(1.5, 1), report } }, { metrics: { metrics: flat(1.5, 1), baseline: flat(2, 0), step: 3, report } }));
    })()`);
    const evaluation = await page.locator("#evaluation").innerText();
    assert.match(evaluation, /exact_match\s+1\s+0\s+\+1/);
    assert.match(evaluation, /perplexity\s+4\.4817\s+7\.3891\s+-2\.9074/);
    assert.match(evaluation, /Generation scores\s[\s\S]*exactMatch\s+1\s+0\s+\+1/);
    assert.match(evaluation, /Say hi:\s+hello\s+hmm\s+hello/);
    await screenshot("evaluation-causal");
  });

  it("shows a real sweep: its children's table, the pick with its reason, and the API's chart", async () => {
    const { trainDatasetId } = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    const created = await fetch(`${baseUrl}/v1/sweeps`, {
      method: "POST",
      headers: { authorization: api.keys.a, "content-type": "application/json" },
      body: JSON.stringify({
        baseModel: "tiny-distilbert",
        trainDatasetId,
        validationSplit: 0.2,
        ranks: [2, 4],
        lora: { dropout: 0 },
        hyperparameters: { epochs: 1, maxSteps: 2, batchSize: 8, learningRate: 0.01, warmupRatio: 0, maxSeqLength: 16, seed: 7 },
      }),
    });
    assert.equal(created.status, 201);
    const sweepId = ((await created.json()) as { id: string }).id;
    const sweep = await waitFor(
      async () => {
        const body = (await (await fetch(`${baseUrl}/v1/sweeps/${sweepId}`, { headers: { authorization: api.keys.a } })).json()) as SweepBody;
        return body.status !== "running" ? body : undefined;
      },
      180_000,
      () => `sweep ${sweepId} to finish\n${logs()}`,
    );
    assert.equal(sweep.status, "succeeded", sweep.reason);

    await page.goto(`${baseUrl}/ui/#/sweeps/${sweepId}`);
    await page.locator("#sweep table").waitFor();
    const rows = page.locator("#sweep table tbody tr");
    assert.equal(await rows.count(), 2);
    const number = (value: number) => (Number.isInteger(value) ? String(value) : value.toFixed(4));
    const metricNames = [sweep.metric, ...Object.keys(sweep.table[0].metrics).filter((name) => name !== sweep.metric).sort()];
    for (const [index, row] of sweep.table.entries()) {
      const cells = (await rows.nth(index).innerText()).split("\t").map((cell) => cell.trim());
      assert.deepEqual(cells.slice(0, 4), [String(row.rank), number(row.alpha), row.targetModules.join(", "), String(row.trainableParameters)]);
      assert.match(cells[4], /^[\d.]+ (B|KiB|MiB)$/, "adapter size");
      assert.match(cells[5], /^\d+ (s|min \d+ s)$/, "training time");
      assert.deepEqual(cells.slice(6, 6 + metricNames.length), metricNames.map((name) => number(row.metrics[name])));
      assert.deepEqual(cells.slice(6 + metricNames.length), ["succeeded", row.jobId === sweep.pick!.jobId ? "picked" : "job"]);
    }
    const picked = sweep.table.findIndex((row) => row.jobId === sweep.pick!.jobId);
    const pick = await page.locator("#sweep-pick").innerText();
    assert.ok(pick.includes(sweep.reason), `the API's reason in ${pick}`);
    assert.match(pick, new RegExp(`Rank ${sweep.table[picked].rank} `));
    // The chart is the API's own SVG, drawn at its size.
    await waitFor(
      () =>
        page.locator("#sweep-chart img").evaluate((image) => {
          const { complete, naturalWidth } = image as unknown as { complete: boolean; naturalWidth: number };
          return complete && naturalWidth > 0;
        }),
      30_000,
      "the sweep chart image",
    );
    const svg = await (await fetch(`${baseUrl}/v1/sweeps/${sweepId}/chart.svg`, { headers: { authorization: api.keys.a } })).text();
    const width = Number(/<svg[^>]*\swidth="(\d+)"/.exec(svg)?.[1]);
    assert.equal(await page.locator("#sweep-chart img").evaluate((image) => (image as unknown as { naturalWidth: number }).naturalWidth), width);
    await screenshot("sweep");
  });

  it("logged no console error on any page", () => {
    assert.deepEqual(consoleErrors, []);
  });
});
