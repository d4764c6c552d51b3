// The OpenAI-compatible surface with a real worker process, driven by the official `openai` SDK:
// a job trains to success and names its adapter; its events and checkpoints list as OpenAI's; a job
// paused mid-run releases its worker and, resumed, ends where the run that never stopped ended.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import tar from "tar-stream";
import { after, before, describe, it } from "node:test";
import OpenAI, { toFile } from "openai";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { CheckpointHold, serveWithWorker, stopRequested, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

/** The files of a tar.gz, by name. */
async function untar(archive: Buffer): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  const extract = tar.extract();
  extract.on("entry", (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk) => chunks.push(chunk as Buffer));
    stream.on("end", () => {
      files.set(header.name, Buffer.concat(chunks));
      next();
    });
  });
  await pipeline(Readable.from(archive), createGunzip(), extract);
  return files;
}

describe("OpenAI-compatible fine-tuning with a worker", () => {
  let api: TestApi;
  let fixture: TrainingFixture;
  let worker: ServiceProcess;
  let client: OpenAI;
  let baseUrl: string;
  let trainingFile: string;
  let validationFile: string;
  /** The job of the first test, which ran without a stop: the reference for a paused and resumed one. */
  let uninterrupted: string;
  const settings = { n_epochs: 2, batch_size: 8, learning_rate_multiplier: 25 };

  before(async () => {
    api = await startTestApi("openai_worker");
    fixture = await trainingFixture(api.modelsDir);
    ({ baseUrl, worker } = await serveWithWorker(api, { CHECKPOINT_EVERY_STEPS: String(fixture.checkpointEverySteps) }));
    client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: api.keys.a.replace(/^Bearer /, ""), maxRetries: 0 });
    const upload = async (file: string, name: string) => (await client.files.create({ file: await toFile(await fs.readFile(file), name), purpose: "fine-tune" })).id;
    trainingFile = await upload(fixture.job.datasetFile, "train.jsonl");
    validationFile = await upload(fixture.job.datasetFile.replace("train", "validation"), "validation.jsonl");
  });

  after(async () => {
    await worker.stop();
    await api.close();
  });

  /** Polls retrieve until the job reaches `status`, naming it and the worker's log on timeout. */
  const retrieveUntil = (jobId: string, statuses: string[], timeoutMs: number) =>
    waitFor(
      async () => {
        const job = await client.fineTuning.jobs.retrieve(jobId);
        return statuses.includes(job.status) ? job : undefined;
      },
      timeoutMs,
      `job ${jobId} to be ${statuses.join(" or ")}\n${worker.log}`,
    );

  it("trains to success; retrieve names the adapter, events and checkpoints list as OpenAI's", async () => {
    const created = await client.fineTuning.jobs.create({
      model: "tiny-distilbert",
      training_file: trainingFile,
      validation_file: validationFile,
      suffix: "sentiment",
      method: { type: "supervised", supervised: { hyperparameters: settings } },
    });
    uninterrupted = created.id;
    const job = await retrieveUntil(created.id, ["succeeded", "failed", "cancelled"], 240_000);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.ok(job.finished_at && job.finished_at >= job.created_at);
    assert.ok(job.trained_tokens && job.trained_tokens > 0);
    const adapterId = (job as unknown as { adapter_id: string }).adapter_id;
    assert.equal(job.fine_tuned_model, `ft:tiny-distilbert:sentiment:${adapterId}`);
    const adapter = await fetch(`${baseUrl}/v1/adapters/${adapterId}`, { headers: { authorization: api.keys.a } });
    assert.equal(adapter.status, 200);

    const events = [];
    for await (const event of client.fineTuning.jobs.listEvents(job.id, { limit: 50 })) events.push(event);
    assert.equal(events[0].message.startsWith("succeeded"), true, events[0].message);
    assert.equal(events.at(-1)!.message, `Created fine-tuning job: ${job.id}`);
    assert.ok(events.some((event) => event.type === "metrics" && (event.data as { step?: number }).step! > 0));

    // 192 examples / 8 = 24 steps an epoch, 48 in all: checkpoints at steps 40 and 20, newest first.
    const checkpoints = [];
    for await (const checkpoint of client.fineTuning.jobs.checkpoints.list(job.id, { limit: 1 })) checkpoints.push(checkpoint);
    assert.deepEqual(checkpoints.map((checkpoint) => checkpoint.step_number), [40, 20]);
    for (const checkpoint of checkpoints) {
      assert.equal(checkpoint.object, "fine_tuning.job.checkpoint");
      assert.equal(checkpoint.fine_tuning_job_id, job.id);
      assert.equal(checkpoint.fine_tuned_model_checkpoint, `ft:tiny-distilbert:sentiment:${job.id}:ckpt-step-${checkpoint.step_number}`);
      assert.equal(checkpoint.metrics.step, checkpoint.step_number);
    }

    // Every kept checkpoint downloads as a PEFT adapter: the checkpoint's own adapter files, no optimizer state.
    const jobId = job.id.slice("ftjob-".length);
    for (const checkpoint of checkpoints) {
      const url = (checkpoint as unknown as { download_url: string }).download_url;
      assert.equal(url, `/v1/jobs/${jobId}/checkpoints/${checkpoint.step_number}/download`);
      const download = await fetch(`${baseUrl}${url}`, { headers: { authorization: api.keys.a } });
      assert.equal(download.status, 200);
      assert.equal(download.headers.get("content-type"), "application/gzip");
      const files = await untar(Buffer.from(await download.arrayBuffer()));
      assert.deepEqual([...files.keys()], ["adapter_config.json", "adapter_model.safetensors", "metrics.json"]);
      const row = await api.db.prisma.checkpoint.findUniqueOrThrow({ where: { jobId_step: { jobId, step: checkpoint.step_number } } });
      const folder = api.store.pathOf(row.storageKey);
      assert.deepEqual(files.get("adapter_model.safetensors"), await fs.readFile(path.join(folder, "adapter_model.safetensors")));
      assert.equal(JSON.parse(files.get("adapter_config.json")!.toString()).peft_type, "LORA");
    }
    const missing = await fetch(`${baseUrl}/v1/jobs/${jobId}/checkpoints/7/download`, { headers: { authorization: api.keys.a } });
    assert.equal(missing.status, 404);
    assert.equal(((await missing.json()) as { error: { code: string } }).error.code, "not_found");
    const otherTenant = await fetch(`${baseUrl}/v1/jobs/${jobId}/checkpoints/20/download`, { headers: { authorization: api.keys.b } });
    assert.equal(otherTenant.status, 404);
  });

  /** Losses of the step events a job logged, by step, and its final validation metrics. */
  async function lossesOf(jobId: string): Promise<{ steps: Map<number, number>; metrics: Record<string, number> }> {
    const steps = new Map<number, number>();
    for await (const event of client.fineTuning.jobs.listEvents(jobId, { limit: 100 })) {
      const data = event.data as { step?: number; loss?: number; totalSteps?: number };
      if (event.type === "metrics" && data.totalSteps !== undefined && data.loss !== undefined) steps.set(data.step!, data.loss);
    }
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId.slice("ftjob-".length) } });
    // The flat numbers; `report` holds their detail.
    const { report: _report, ...metrics } = row.metrics as Record<string, number> & { report?: unknown };
    return { steps, metrics };
  }

  it("pauses a running job at a checkpoint, releases the worker, and resumes it to the uninterrupted run's result", async () => {
    // Every checkpoint is held: the job is surely running when the pause arrives.
    const hold = await CheckpointHold.take(api.db.url);
    const created = await client.fineTuning.jobs.create({
      model: "tiny-distilbert",
      training_file: trainingFile,
      validation_file: validationFile,
      method: { type: "supervised", supervised: { hyperparameters: settings } },
    });
    await hold.reached(60_000, () => worker.log);
    const pausing = await client.fineTuning.jobs.pause(created.id);
    assert.equal(pausing.status, "running", "a running job keeps running until its worker has checkpointed");
    await stopRequested(worker, "pause");
    await hold.release();
    const paused = await retrieveUntil(created.id, ["paused"], 30_000);
    assert.equal(paused.finished_at, null);
    const jobId = created.id.slice("ftjob-".length);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
    assert.equal(row.workerId, null, "the worker is released");
    assert.equal(row.pauseRequestedAt, null);
    const pausedEvent = await api.db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "paused" } });
    const pausedAt = (pausedEvent.data as { step: number }).step;
    const newest = await api.db.prisma.checkpoint.findFirstOrThrow({ where: { jobId }, orderBy: { step: "desc" } });
    assert.equal(newest.step, pausedAt, "paused at its newest checkpoint");
    assert.ok(pausedAt >= 20 && pausedAt < 48, `paused at step ${pausedAt}`);
    assert.equal((await api.queue.getJob(jobId))?.finishedOn !== undefined, true, "its queue entry is done: the worker is free");

    const pausedAdapter = await fetch(`${baseUrl}/v1/jobs/${jobId}/checkpoints/${pausedAt}/download`, { headers: { authorization: api.keys.a } });
    assert.equal(pausedAdapter.status, 200, "a paused job's checkpoint is a usable adapter");

    const resumed = await client.fineTuning.jobs.resume(created.id);
    assert.equal(resumed.status, "queued");
    const done = await retrieveUntil(created.id, ["succeeded", "failed", "cancelled"], 120_000);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    const starts = await api.db.prisma.jobEvent.findMany({ where: { jobId, type: "started" }, orderBy: { id: "asc" } });
    assert.deepEqual(starts.map((event) => (event.data as { resumeFromStep: number | null }).resumeFromStep), [null, pausedAt]);
    assert.equal((await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).attempts, 1, "a pause does not use up an attempt");

    // Same seed and data: every step both runs reported has the same loss, and the end is the same.
    const [reference, continued] = await Promise.all([lossesOf(uninterrupted), lossesOf(created.id)]);
    const common = [...continued.steps.keys()].filter((step) => reference.steps.has(step));
    assert.ok(common.includes(48), `both report the last step; common steps ${common}`);
    for (const step of common) assert.ok(Math.abs(continued.steps.get(step)! - reference.steps.get(step)!) < 1e-5, `step ${step}: ${continued.steps.get(step)} vs ${reference.steps.get(step)}`);
    for (const [name, value] of Object.entries(reference.metrics)) assert.ok(Math.abs(continued.metrics[name] - value) < 1e-5, `${name}: ${continued.metrics[name]} vs ${value}`);
    // Step for step: each adapter's metrics.json has the loss of every step (the continued run's
    // carries the steps before the pause in its checkpoint's trainer state).
    const curveOf = async (openAiJobId: string) => {
      const adapter = await api.db.prisma.adapter.findUniqueOrThrow({ where: { jobId: openAiJobId.slice("ftjob-".length) } });
      const metricsFile = JSON.parse(await fs.readFile(path.join(api.store.pathOf(adapter.storageKey), "metrics.json"), "utf8")) as { loss_curve: { step: number; loss: number }[] };
      return metricsFile.loss_curve;
    };
    const [referenceCurve, continuedCurve] = await Promise.all([curveOf(uninterrupted), curveOf(created.id)]);
    assert.deepEqual(continuedCurve.map((point) => point.step), referenceCurve.map((point) => point.step));
    assert.equal(continuedCurve.length, 48);
    for (const [index, point] of continuedCurve.entries()) {
      assert.ok(Math.abs(point.loss - referenceCurve[index].loss) < 1e-5, `step ${point.step}: ${point.loss} vs ${referenceCurve[index].loss}`);
    }
  });
});
