// Adapter composition through HTTP with a real worker: POST /v1/adapters/compose becomes a job whose
// result is an ordinary adapter (predict, download), evaluated on each source job's validation set;
// linear with weights (1, 0) predicts exactly what the first source predicts.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { parse as parseYaml } from "yaml";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { trainingFixture, type TrainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, waitFor, type ServiceProcess } from "../helpers/worker-harness.ts";

describe("adapter composition with a worker", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let fixture: TrainingFixture;
  let datasetId: string;
  const texts = ["the movie was great and fun", "this film is boring and dull", "i hate the plot", "wonderful actors"];

  before(async () => {
    api = await startTestApi("compose");
    fixture = await trainingFixture(api.modelsDir);
    ({ worker } = await serveWithWorker(api));
    const uploaded = await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", await fs.readFile(fixture.job.datasetFile), "train.jsonl").expect(201);
    datasetId = uploaded.body.id as string;
  });
  after(async () => {
    await worker.stop();
    await api.close();
  });

  const finished = (jobId: string) =>
    waitFor(
      async () => {
        const body = (await request(api.app.server).get(`/v1/jobs/${jobId}`).set("authorization", api.keys.a).expect(200)).body;
        return ["succeeded", "failed", "cancelled"].includes(body.status) ? body : undefined;
      },
      180_000,
      () => `job ${jobId} to finish\n${worker.log}`,
    );

  const jobMetrics = new Map<string, Record<string, number>>();
  async function trainAdapter(r: number, seed: number): Promise<string> {
    const created = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.a)
      .send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, validationSplit: 0.25, lora: { r, alpha: 2 * r, dropout: 0 }, hyperparameters: { epochs: 1, maxSteps: 3, batchSize: 8, learningRate: 0.05, warmupRatio: 0, maxSeqLength: 16, seed } })
      .expect(201);
    const job = await finished(created.body.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    jobMetrics.set(job.adapterId, job.metrics);
    return job.adapterId as string;
  }

  const predict = async (adapterId: string) =>
    (await request(api.app.server).post(`/v1/adapters/${adapterId}/predict`).set("authorization", api.keys.a).send({ inputs: texts }).expect(200)).body.predictions as { label: string; scores: Record<string, number> }[];

  it("composes two adapters into an ordinary adapter evaluated on each source's validation set", async () => {
    const first = await trainAdapter(4, 1);
    const second = await trainAdapter(4, 2);
    const small = await trainAdapter(2, 3);

    const created = await request(api.app.server).post("/v1/adapters/compose").set("authorization", api.keys.a).send({ adapterIds: [first, second], weights: [1, 0], type: "linear" }).expect(201);
    const job = await finished(created.body.id);
    assert.equal(job.status, "succeeded", JSON.stringify(job.error));
    assert.deepEqual(job.composition, { type: "linear", weights: [1, 0], svdRank: null, adapterIds: [first, second] }, "the job shows what it composes");
    assert.equal(job.sweepId, null);
    for (const source of ["source_1", "source_2"]) {
      for (const metric of ["accuracy", "macro_f1", "loss"]) assert.ok(Number.isFinite(job.metrics[`${source}.${metric}`]), `${source}.${metric} in ${JSON.stringify(job.metrics)}`);
    }
    // Weights (1, 0) make the first adapter again: on the first source's validation set it scores what that job scored.
    for (const metric of ["accuracy", "macro_f1", "loss"]) {
      assert.ok(Math.abs(job.metrics[`source_1.${metric}`] - jobMetrics.get(first)![metric]) < 1e-5, `${metric}: ${job.metrics[`source_1.${metric}`]} vs ${jobMetrics.get(first)![metric]}`);
    }
    const composed = job.adapterId as string;
    const [expected, actual] = [await predict(first), await predict(composed)];
    actual.forEach((prediction, index) => {
      assert.equal(prediction.label, expected[index].label);
      for (const [label, score] of Object.entries(prediction.scores)) assert.ok(Math.abs(score - expected[index].scores[label]) < 1e-5, `${label}: ${score} vs ${expected[index].scores[label]}`);
    });
    const adapter = await api.db.prisma.adapter.findUniqueOrThrow({ where: { id: composed } });
    assert.equal(adapter.rank, 4);
    assert.equal(adapter.alpha, 4);
    assert.ok(adapter.trainableParameters! > 0);
    await request(api.app.server).get(`/v1/adapters/${composed}/download`).set("authorization", api.keys.a).expect(200);

    // The composed adapter carries a model card, served like every adapter's, whose numbers are metrics.json's.
    const view = (await request(api.app.server).get(`/v1/adapters/${composed}`).set("authorization", api.keys.a).expect(200)).body;
    assert.equal(view.trainableParameters, adapter.trainableParameters, "the adapter view shows its trainable parameters");
    assert.deepEqual(view.files.map((file: { name: string }) => file.name), ["README.md", "adapter_config.json", "adapter_model.safetensors", "metrics.json"]);
    const served = (name: string) => request(api.app.server).get(`/v1/adapters/${composed}/files/${name}`).set("authorization", api.keys.a).buffer(true).parse((res, done) => {
      let text = "";
      res.on("data", (chunk: Buffer) => (text += chunk.toString()));
      res.on("end", () => done(null, text));
    }).expect(200);
    const card = (await served("README.md")).body as string;
    const metricsFile = JSON.parse((await served("metrics.json")).body as string) as { metrics: Record<string, number> };
    const front = parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(card)![1]) as { tags: string[]; "model-index": { results: { metrics: { name: string; value: number }[] }[] }[] };
    assert.ok(front.tags.includes("adapter-composition"));
    assert.deepEqual(Object.fromEntries(front["model-index"][0].results[0].metrics.map((metric) => [metric.name, metric.value])), metricsFile.metrics);
    // The job row's metrics went through Postgres JSON (15 significant digits): equal to metrics.json's to that precision.
    assert.deepEqual(Object.keys(metricsFile.metrics).sort(), Object.keys(job.metrics).sort());
    for (const [key, value] of Object.entries(metricsFile.metrics)) assert.ok(Math.abs(value - job.metrics[key]) < 1e-12, `${key}: ${value} vs ${job.metrics[key]}`);
    for (const [index, id] of [first, second].entries()) assert.ok(card.includes(`| ${index + 1} | \`${id}\` |`), `source ${index + 1} named by its adapter id`);

    // cat takes any ranks: rank 4 + 2.
    const cat = await request(api.app.server).post("/v1/adapters/compose").set("authorization", api.keys.a).send({ adapterIds: [first, small], weights: [0.5, 0.5], type: "cat" }).expect(201);
    const catJob = await finished(cat.body.id);
    assert.equal(catJob.status, "succeeded", JSON.stringify(catJob.error));
    assert.equal((await api.db.prisma.adapter.findUniqueOrThrow({ where: { id: catJob.adapterId } })).rank, 6);

    const post = (body: object) => request(api.app.server).post("/v1/adapters/compose").set("authorization", api.keys.a).send(body);
    assert.equal((await post({ adapterIds: [first, small], weights: [1, 1], type: "linear" }).expect(422)).body.error.code, "incompatible_adapters");
    assert.equal((await post({ adapterIds: [first, second], weights: [1] }).expect(400)).body.error.code, "validation_failed");
    assert.equal((await post({ adapterIds: [first, second], weights: [1, 1], type: "cat", svdRank: 2 }).expect(400)).body.error.code, "validation_failed");
    const other = await request(api.app.server).post("/v1/adapters/compose").set("authorization", api.keys.b).send({ adapterIds: [first], weights: [1] }).expect(422);
    assert.equal(other.body.error.code, "invalid_reference", "another tenant's adapter does not exist for this one");
  });
});
