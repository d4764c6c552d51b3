// POST /v1/jobs/estimate: the engine's step count, tokens from the dataset's character stats,
// duration from the median throughput workers reported for the model (else the configured
// default); and estimatedFinish on a running job. Memory plans: api-memory.test.ts.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { CHARS_PER_TOKEN, SPECIAL_TOKENS_PER_EXAMPLE } from "../../services/api/estimate.ts";
import { jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

describe("job estimates", () => {
  let api: TestApi;
  let datasetId: string;
  const estimate = (body: object) => request(api.app.server).post("/v1/jobs/estimate").set("authorization", api.keys.a).send(body);
  // 12 examples of exactly 40 characters ("text" only counts): 40 / 4 + 2 = 12 tokens each.
  const records = Array.from({ length: 12 }, (_, index) => ({ text: `${String(index).padStart(2, "0")}${"x".repeat(38)}`, label: index % 2 ? "a" : "b" }));

  before(async () => {
    api = await startTestApi("estimate", { ESTIMATE_DEFAULT_TOKENS_PER_SECOND: "10" });
    datasetId = (await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(records), "d.jsonl").expect(201)).body.id;
  });
  after(async () => api.close());

  it("counts examples, tokens and steps as the engine does, with the default throughput when none was measured", async () => {
    const response = await estimate({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, validationSplit: 0.25, hyperparameters: { batchSize: 4, epochs: 3 } }).expect(200);
    const perExample = 40 / CHARS_PER_TOKEN + SPECIAL_TOKENS_PER_EXAMPLE;
    assert.deepEqual(response.body.examples, { train: 9, validation: 3 });
    assert.deepEqual(response.body.steps, { perEpoch: 3, total: 9 });
    assert.deepEqual(response.body.tokens, { perExample, perEpoch: 9 * perExample, total: 27 * perExample });
    assert.deepEqual(response.body.duration, { seconds: Math.ceil((27 * perExample) / 10), tokensPerSecond: 10, throughputSource: "default", measuredJobs: 0 });
    // tiny-distilbert's config.json has only "dim": the engine cannot plan it (api-memory.test.ts plans real ones).
    assert.equal(response.body.memory, null);
    assert.equal(response.body.hyperparameters.learningRate, 2e-4, "settings resolved as a job would be");
    const capped = await estimate({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, hyperparameters: { batchSize: 4, maxSteps: 2 } }).expect(200);
    assert.deepEqual(capped.body.steps, { perEpoch: 3, total: 2 });
    assert.equal(capped.body.tokens.total, 8 * perExample);
    assert.equal(await api.db.prisma.job.count(), 0, "nothing stored");
  });

  it("uses the median throughput workers reported for the model, and shows estimatedFinish while running", async () => {
    const ids = [];
    for (const tokensPerSecond of [100, 300, 200]) {
      const job = await request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(201);
      await api.db.prisma.job.update({ where: { id: job.body.id }, data: { progress: { step: 1, tokensPerSecond, etaMs: 60_000 } } });
      ids.push(job.body.id as string);
    }
    const response = await estimate({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(200);
    assert.equal(response.body.duration.tokensPerSecond, 200);
    assert.equal(response.body.duration.throughputSource, "measured");
    assert.equal(response.body.duration.measuredJobs, 3);

    const running = await api.db.prisma.job.update({ where: { id: ids[0] }, data: { status: "running" } });
    const view = await request(api.app.server).get(`/v1/jobs/${ids[0]}`).set("authorization", api.keys.a).expect(200);
    assert.equal(view.body.estimatedFinish, new Date(running.updatedAt.getTime() + 60_000).toISOString());
    const queued = await request(api.app.server).get(`/v1/jobs/${ids[1]}`).set("authorization", api.keys.a).expect(200);
    assert.equal(queued.body.estimatedFinish, null);
  });

  it("refuses what POST /v1/jobs refuses, with the same codes", async () => {
    assert.equal((await estimate({ baseModel: "nope", trainDatasetId: datasetId }).expect(422)).body.error.code, "invalid_reference");
    assert.equal((await estimate({ baseModel: "tiny-distilbert", trainDatasetId: "00000000-0000-4000-8000-000000000000" }).expect(422)).body.error.code, "invalid_reference");
    assert.equal((await estimate({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, hyperparameters: { epochs: 0 } }).expect(400)).body.error.code, "validation_failed");
  });
});
