// The OpenAI-compatible surface with a real worker process, driven by the official `openai` SDK:
// a job trains to success and names its adapter; its events and checkpoints list as OpenAI's.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import OpenAI, { toFile } from "openai";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

describe("OpenAI-compatible fine-tuning with a worker", () => {
  let api: TestApi;
  let fixture: TrainingFixture;
  let worker: ServiceProcess;
  let client: OpenAI;
  let baseUrl: string;
  let trainingFile: string;
  let validationFile: string;

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
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: 2, batch_size: 8, learning_rate_multiplier: 25 } } },
    });
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
  });
});
