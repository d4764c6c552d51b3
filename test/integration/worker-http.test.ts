// The whole product through HTTP with a real worker process: upload → job → live events →
// succeeded → download → the tarball's adapter, loaded by the engine, predicts exactly what
// POST /v1/adapters/:id/predict returns.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { after, before, describe, it } from "node:test";
import tar from "tar-stream";
import { ClassifierService } from "../../services/trainer/index.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { JOB_PROGRESS_FIELDS, type JobProgress } from "../../services/common/job-progress.ts";
import { CheckpointHold, serveWithWorker, stopRequested, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";
import { serverSentEvents } from "../helpers/sse.ts";

interface StreamedEvent {
  id: string;
  type: string;
  message: string;
  data: Record<string, unknown> | null;
}

/** Reads the job's SSE stream until its `end` event. */
async function streamEvents(baseUrl: string, key: string, jobId: string): Promise<{ events: StreamedEvent[]; end: { status: string } }> {
  const response = await fetch(`${baseUrl}/v1/jobs/${jobId}/events`, { headers: { authorization: key, accept: "text/event-stream" } });
  assert.equal(response.status, 200);
  assert.match(response.headers.get("content-type") ?? "", /text\/event-stream/);
  const events: StreamedEvent[] = [];
  for await (const { event, data } of serverSentEvents(response.body!)) {
    if (event === "end") return { events, end: JSON.parse(data) as { status: string } };
    events.push(JSON.parse(data) as StreamedEvent);
  }
  assert.fail("the event stream closed without an end event");
}

async function extractTarGz(archive: Buffer, into: string): Promise<string[]> {
  await fs.mkdir(into, { recursive: true });
  const names: string[] = [];
  const extract = tar.extract();
  extract.on("entry", (header, stream, next) => {
    names.push(header.name);
    const chunks: Buffer[] = [];
    stream.on("data", (chunk) => chunks.push(chunk as Buffer));
    stream.on("end", () => {
      fs.writeFile(path.join(into, path.basename(header.name)), Buffer.concat(chunks)).then(() => next(), next);
    });
  });
  await pipeline(Readable.from(archive), createGunzip(), extract);
  return names;
}

/** Deep equality where numbers may differ by a relative 1e-15. */
function assertSameNumbers(actual: unknown, expected: unknown, where: string): void {
  if (typeof expected === "number") {
    assert.equal(typeof actual, "number", where);
    assert.ok(Math.abs((actual as number) - expected) <= 1e-15 * Math.max(1, Math.abs(expected)), `${where}: ${actual} ≠ ${expected}`);
  } else if (expected !== null && typeof expected === "object") {
    // Postgres's jsonb keeps keys in its own order.
    assert.deepEqual(Object.keys(actual as object).sort(), Object.keys(expected).sort(), where);
    for (const [key, value] of Object.entries(expected)) assertSameNumbers((actual as Record<string, unknown>)[key], value, `${where}.${key}`);
  } else assert.equal(actual, expected, where);
}

describe("fine-tuning through HTTP with a worker", () => {
  let api: TestApi;
  let baseUrl: string;
  let fixture: TrainingFixture;
  let worker: ServiceProcess;
  let adapterId: string;
  const probeTexts = ["the movie was great and fun", "this film is boring and dull", "i hate the plot", "wonderful actors"];

  before(async () => {
    api = await startTestApi("worker_http");
    fixture = await trainingFixture(api.modelsDir);
    ({ baseUrl, worker } = await serveWithWorker(api, { CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) }));
  });

  after(async () => {
    await worker.stop();
    await api.close();
  });

  it("uploads, trains with live events, and serves a downloadable adapter", async () => {
    const upload = new FormData();
    upload.append("file", new Blob([await fs.readFile(fixture.job.datasetFile)]), "sentiment.jsonl");
    const dataset = await fetch(`${baseUrl}/v1/datasets`, { method: "POST", headers: { authorization: api.keys.a }, body: upload });
    assert.equal(dataset.status, 201, await dataset.clone().text());
    const { id: datasetId } = (await dataset.json()) as { id: string };

    const created = await fetch(`${baseUrl}/v1/jobs`, {
      method: "POST",
      headers: { authorization: api.keys.a, "content-type": "application/json" },
      body: JSON.stringify({
        baseModel: "tiny-distilbert",
        trainDatasetId: datasetId,
        validationSplit: fixture.job.validationSplit,
        lora: fixture.job.lora,
        hyperparameters: fixture.job.hyperparameters,
      }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const { id: jobId } = (await created.json()) as { id: string };

    const startedAt = Date.now();
    const { events, end } = await streamEvents(baseUrl, api.keys.a, jobId);
    const seconds = (Date.now() - startedAt) / 1000;
    assert.equal(end.status, "succeeded", `${JSON.stringify(events.slice(-3))}\n${worker.log}`);
    const types = events.map((event) => event.type);
    for (const type of ["started", "step", "evaluation", "checkpoint", "succeeded"]) assert.ok(types.includes(type), `no ${type} event in ${types}`);
    assert.equal(types.at(-1), "succeeded");
    // Step metrics are throttled to about one a second (plus the last one).
    const steps = events.filter((event) => event.type === "step");
    assert.ok(steps.length <= Math.ceil(seconds) + 2, `${steps.length} step events in ${seconds} s`);
    const lastStep = steps.at(-1)!.data as { step: number; totalSteps: number };
    assert.equal(lastStep.step, lastStep.totalSteps);

    const job = (await (await fetch(`${baseUrl}/v1/jobs/${jobId}`, { headers: { authorization: api.keys.a } })).json()) as {
      status: string;
      attempts: number;
      adapterId: string;
      progress: JobProgress;
      metrics: Record<string, number> & { report?: { adapter: { labels: string[]; confusionMatrix: number[][] }; base: { labels: string[] } } };
    };
    assert.equal(job.status, "succeeded");
    assert.equal(job.attempts, 1);
    assert.equal(job.progress.step, job.progress.totalSteps);
    // Every field the worker writes reaches the client: the schema and the worker share one declaration.
    for (const field of Object.keys(JOB_PROGRESS_FIELDS)) assert.equal(typeof job.progress[field as keyof JobProgress], "number", `progress.${field}`);
    assert.equal(job.progress.percent, 100);
    adapterId = job.adapterId;
    const evaluations = await api.db.prisma.evaluation.findMany({ where: { adapterId } });
    assert.ok(evaluations.some((row) => row.metric === "accuracy" && row.baselineValue !== null));
    assert.ok(evaluations.some((row) => row.metric === "ece") && evaluations.some((row) => row.metric === "f1/positive"), "the new flat metrics are Evaluation rows");
    // The final report, adapter and base side by side, through the job's JSON schema.
    assert.deepEqual(job.metrics.report?.adapter.labels, ["negative", "positive"]);
    assert.deepEqual(job.metrics.report?.base.labels, ["negative", "positive"]);
    assert.equal(typeof job.metrics.accuracy, "number");

    const download = await fetch(`${baseUrl}/v1/adapters/${adapterId}/download`, { headers: { authorization: api.keys.a } });
    assert.equal(download.status, 200);
    const archive = Buffer.from(await download.arrayBuffer());
    const sha256 = createHash("sha256").update(archive).digest("hex");
    assert.equal(download.headers.get("etag"), `"${sha256}"`);
    const adapterRow = await api.db.prisma.adapter.findUniqueOrThrow({ where: { id: adapterId } });
    assert.equal(adapterRow.sha256, sha256);
    assert.equal(Number(adapterRow.sizeBytes), archive.length);

    const unpacked = await fs.mkdtemp(path.join(os.tmpdir(), "lora-http-adapter-"));
    const names = await extractTarGz(archive, unpacked);
    assert.ok(names.includes("adapter_config.json") && names.includes("adapter_model.safetensors"), names.join());
    // The model card travels in the archive and in the manifest, with its checksum.
    assert.deepEqual(names, ["README.md", "adapter_config.json", "adapter_model.safetensors", "metrics.json"]);
    const card = await fs.readFile(path.join(unpacked, "README.md"));
    const manifest = adapterRow.files as unknown as { name: string; sizeBytes: number; sha256: string }[];
    assert.deepEqual(manifest.find((file) => file.name === "README.md"), { name: "README.md", sizeBytes: card.length, sha256: createHash("sha256").update(card).digest("hex") });
    assert.match(card.toString(), /^---\nbase_model: "tiny-distilbert"\nlibrary_name: "peft"\npipeline_tag: "text-classification"\n/);
    // The data quality preflight the job was accepted with is the card's data quality section.
    const accepted = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    const findings = (accepted.qualityReport as { findings: { code: string }[] } | null)?.findings;
    assert.ok(findings, "the job keeps its preflight report");
    if (findings.length) for (const { code } of findings) assert.ok(card.toString().includes(code), `the card names ${code}`);
    else assert.match(card.toString(), /The data-quality checks found nothing\./);
    const servedCard = await fetch(`${baseUrl}/v1/adapters/${adapterId}/files/README.md`, { headers: { authorization: api.keys.a } });
    assert.equal(servedCard.status, 200);
    assert.equal(servedCard.headers.get("content-type"), "text/markdown; charset=utf-8");
    assert.deepEqual(Buffer.from(await servedCard.arrayBuffer()), card);
    const metricsFile = JSON.parse(await fs.readFile(path.join(unpacked, "metrics.json"), "utf8")) as { report: unknown };
    // Through Prisma and jsonb a float may come back one digit short (…30113 → …3011), so numbers agree to 1e-15.
    assertSameNumbers(job.metrics.report, metricsFile.report, "job.metrics.report is metrics.json's report");

    const predicted = await fetch(`${baseUrl}/v1/adapters/${adapterId}/predict`, {
      method: "POST",
      headers: { authorization: api.keys.a, "content-type": "application/json" },
      body: JSON.stringify({ inputs: probeTexts }),
    });
    assert.equal(predicted.status, 200, await predicted.clone().text());
    const served = ((await predicted.json()) as { predictions: { label: string; score: number; scores: Record<string, number> }[] }).predictions;
    const local = await ClassifierService.load(fixture.modelDir, "auto");
    try {
      const expected = (await local.predict(probeTexts, unpacked)).map(({ label, score, scores }) => ({ label, score, scores }));
      assert.deepEqual(served, expected);
    } finally {
      local.dispose();
    }
    await fs.rm(unpacked, { recursive: true, force: true });
  });

  it("cancels a running job through POST /v1/jobs/:id/cancel within 5 s", async () => {
    const datasetId = (await api.db.prisma.dataset.findFirstOrThrow()).id;
    // Held at its first checkpoint, the job is surely running when the cancel arrives.
    const hold = await CheckpointHold.take(api.db.url);
    const created = await fetch(`${baseUrl}/v1/jobs`, {
      method: "POST",
      headers: { authorization: api.keys.a, "content-type": "application/json" },
      body: JSON.stringify({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, validationSplit: 0.2, hyperparameters: { ...fixture.job.hyperparameters, epochs: 50 } }),
    });
    const { id: jobId } = (await created.json()) as { id: string };
    const getJob = async () => (await (await fetch(`${baseUrl}/v1/jobs/${jobId}`, { headers: { authorization: api.keys.a } })).json()) as { status: string; progress: { step?: number } };
    await hold.reached(60_000, () => worker.log);
    assert.equal((await getJob()).status, "running");
    const requestedAt = Date.now();
    const cancel = await fetch(`${baseUrl}/v1/jobs/${jobId}/cancel`, { method: "POST", headers: { authorization: api.keys.a } });
    assert.equal(cancel.status, 202);
    await stopRequested(worker, "cancel", 5000);
    await hold.release();
    await waitFor(async () => (await getJob()).status === "cancelled", 5000, () => `the job to be cancelled within 5 s\n${worker.log}`);
    assert.ok(Date.now() - requestedAt <= 5000);
    assert.equal(await api.db.prisma.checkpoint.count({ where: { jobId } }), 0);
  });

  it("answers predictions of concurrent requests batched together like separate ones", async () => {
    const predict = (inputs: string[]) =>
      fetch(`${baseUrl}/v1/adapters/${adapterId}/predict`, {
        method: "POST",
        headers: { authorization: api.keys.a, "content-type": "application/json" },
        body: JSON.stringify({ inputs }),
      }).then(async (response) => {
        assert.equal(response.status, 200);
        return ((await response.json()) as { predictions: { label: string; scores: Record<string, number> }[] }).predictions;
      });
    const alone = [];
    for (const text of probeTexts) alone.push((await predict([text]))[0]);
    const together = await Promise.all(probeTexts.map((text) => predict([text]).then((answer) => answer[0])));
    for (const [index, prediction] of together.entries()) {
      assert.equal(prediction.label, alone[index].label);
      for (const [label, score] of Object.entries(prediction.scores)) assert.ok(Math.abs(score - alone[index].scores[label]) < 1e-5);
    }
  });

  it("refuses bad prediction requests with clear 4xx errors", async () => {
    const post = (id: string, body: unknown, key = api.keys.a) =>
      fetch(`${baseUrl}/v1/adapters/${id}/predict`, { method: "POST", headers: { authorization: key, "content-type": "application/json" }, body: JSON.stringify(body) });
    const empty = await post(adapterId, { inputs: [] });
    assert.equal(empty.status, 400);
    assert.equal(((await empty.json()) as { error: { code: string } }).error.code, "validation_failed");
    const tooMany = await post(adapterId, { inputs: Array.from({ length: api.config.predictMaxBatch + 1 }, () => "x") });
    assert.equal(tooMany.status, 413);
    assert.equal(((await tooMany.json()) as { error: { code: string } }).error.code, "too_many_inputs");
    const unknown = await post("00000000-0000-4000-8000-000000000000", { inputs: ["x"] });
    assert.equal(unknown.status, 404);
    const otherTenant = await post(adapterId, { inputs: ["x"] }, api.keys.b);
    assert.equal(otherTenant.status, 404);
  });
});
