// Early stopping through the service: a job on a dataset built to overfit stops once its validation
// loss has not improved for `patience` evaluations, says which step its adapter holds, and the
// adapter it publishes is that step's checkpoint, byte for byte.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { noiseRecords } from "../helpers/overfit-fixture.ts";
import { trainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

describe("early stopping with a worker", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  const upload = async (body: string, name: string) =>
    (await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", Buffer.from(body), name).expect(201)).body.id as string;

  before(async () => {
    api = await startTestApi("early_stopping");
    await trainingFixture(api.modelsDir);
    ({ worker } = await serveWithWorker(api));
  });
  after(async () => {
    await worker.stop();
    await api.close();
  });

  it("stops a run whose validation loss rises and publishes the best checkpoint as its adapter", async () => {
    const created = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.a)
      .send({
        baseModel: "tiny-distilbert",
        trainDatasetId: await upload(noiseRecords(48, 1), "train.jsonl"),
        validationDatasetId: await upload(noiseRecords(32, 2), "validation.jsonl"),
        lora: { r: 8, alpha: 16, dropout: 0 },
        hyperparameters: { epochs: 60, batchSize: 8, learningRate: 2e-2, warmupRatio: 0, maxSeqLength: 16, seed: 3, evalEverySteps: 6, earlyStopping: { metric: "loss", patience: 3 } },
      })
      .expect(201);
    const jobId = created.body.id as string;
    const job = await waitFor(
      async () => {
        const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } });
        return ["succeeded", "failed", "cancelled"].includes(row.status) ? row : undefined;
      },
      120_000,
      `job ${jobId} to finish\n${worker.log}`,
    );
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    const evaluations = (await api.db.prisma.jobEvent.findMany({ where: { jobId, type: "evaluation" }, orderBy: { id: "asc" } })).map(
      (event) => event.data as { step: number; metrics: { loss: number } },
    );
    const losses = evaluations.map((report) => `${report.step}: ${report.metrics.loss.toFixed(4)}`).join(", ");
    const best = evaluations.reduce((low, report) => (report.metrics.loss < low.metrics.loss ? report : low));
    const progress = job.progress as { step: number; totalSteps: number; adapterStep: number };
    assert.ok(progress.step < 6 * 60, `stopped early at step ${progress.step}; evaluations ${losses}`);
    assert.equal(progress.adapterStep, best.step, losses);
    assert.ok(best.step < progress.step, `the validation loss rose after step ${best.step}: ${losses}`);
    const succeeded = await api.db.prisma.jobEvent.findFirstOrThrow({ where: { jobId, type: "succeeded" } });
    assert.match(succeeded.message, new RegExp(`stopped early.*best step, ${best.step}`));
    assert.equal((job.metrics as { loss: number }).loss, best.metrics.loss, "the job's metrics are its adapter's");

    const adapter = await api.db.prisma.adapter.findUniqueOrThrow({ where: { jobId } });
    const checkpoint = await api.db.prisma.checkpoint.findUniqueOrThrow({ where: { jobId_step: { jobId, step: best.step } } });
    const adapterBytes = await fs.readFile(path.join(api.store.pathOf(adapter.storageKey), "adapter_model.safetensors"));
    const checkpointBytes = await fs.readFile(path.join(api.store.pathOf(checkpoint.storageKey), "adapter_model.safetensors"));
    assert.ok(adapterBytes.equals(checkpointBytes), "the adapter is the best checkpoint, byte for byte");
    assert.equal((adapter.metrics as { step: number }).step, best.step);
  });
});
