// POST /v1/jobs/:id/pause and /resume without a worker: what each status allows, the queue
// entry a pause removes and a resume adds back, and the same rules through the openai SDK. The
// running case (a worker checkpoints and stops) is in openai-worker.test.ts.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import request from "supertest";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

describe("pausing and resuming jobs", () => {
  let api: TestApi;
  let datasetId: string;
  const post = (path: string, key = api.keys.a) => request(api.app.server).post(path).set("authorization", key);
  const submit = async () =>
    (await post("/v1/jobs").send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(201)).body.id as string;

  before(async () => {
    api = await startTestApi("job_pause");
    datasetId = (await post("/v1/datasets").attach("file", jsonl(classificationRecords(6)), "d.jsonl").expect(201)).body.id as string;
  });
  after(async () => api.close());

  it("pauses a queued job at once and resumes it into the queue again", async () => {
    const id = await submit();
    const paused = await post(`/v1/jobs/${id}/pause`).expect(200);
    assert.equal(paused.body.status, "paused");
    assert.equal(await api.queue.getJob(id), undefined, "removed from the queue");
    assert.equal((await post(`/v1/jobs/${id}/pause`).expect(200)).body.status, "paused", "pausing again changes nothing");
    const otherTenant = await post(`/v1/jobs/${id}/pause`, api.keys.b).expect(404);
    assert.equal(otherTenant.body.error.code, "not_found");
    const listed = await request(api.app.server).get("/v1/jobs?status=paused").set("authorization", api.keys.a).expect(200);
    assert.deepEqual(listed.body.data.map((job: { id: string }) => job.id), [id]);
    // A paused job still needs its dataset.
    assert.equal((await request(api.app.server).delete(`/v1/datasets/${datasetId}`).set("authorization", api.keys.a).expect(409)).body.error.code, "dataset_in_use");

    const resumed = await post(`/v1/jobs/${id}/resume`).expect(200);
    assert.equal(resumed.body.status, "queued");
    assert.ok(resumed.body.enqueuedAt);
    assert.ok(await api.queue.getJob(id), "queued in BullMQ again under its id");
    const notPaused = await post(`/v1/jobs/${id}/resume`).expect(409);
    assert.equal(notPaused.body.error.code, "job_not_paused");
    const types = (await api.db.prisma.jobEvent.findMany({ where: { jobId: id }, orderBy: { id: "asc" } })).map((event) => event.type);
    assert.deepEqual(types, ["paused", "resumed"]);
  });

  it("cancels a paused job at once, and refuses to pause or resume a finished one", async () => {
    const id = await submit();
    await post(`/v1/jobs/${id}/pause`).expect(200);
    assert.equal((await post(`/v1/jobs/${id}/cancel`).expect(200)).body.status, "cancelled");
    assert.equal((await post(`/v1/jobs/${id}/pause`).expect(409)).body.error.code, "job_finished");
    assert.equal((await post(`/v1/jobs/${id}/resume`).expect(409)).body.error.code, "job_finished");
  });

  it("asks a running job to pause, and a resume before its worker stops withdraws the request", async () => {
    const id = await submit();
    // As a worker would have it: claimed and running.
    await api.db.prisma.job.update({ where: { id }, data: { status: "running", attempts: 1 } });
    const asked = await post(`/v1/jobs/${id}/pause`).expect(202);
    assert.equal(asked.body.status, "running");
    assert.ok(asked.body.pauseRequestedAt);
    const withdrawn = await post(`/v1/jobs/${id}/resume`).expect(200);
    assert.equal(withdrawn.body.status, "running");
    assert.equal(withdrawn.body.pauseRequestedAt, null);
    assert.equal((await post(`/v1/jobs/${id}/resume`).expect(409)).body.error.code, "job_not_paused");
  });

  it("pauses and resumes through the openai SDK, with its errors as APIError", async () => {
    await api.app.listen({ host: "127.0.0.1", port: 0 });
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${(api.app.server.address() as { port: number }).port}/v1`, apiKey: api.keys.a.replace(/^Bearer /, ""), maxRetries: 0 });
    const id = await submit();
    assert.equal((await client.fineTuning.jobs.pause(`ftjob-${id}`)).status, "paused");
    assert.equal((await client.fineTuning.jobs.resume(`ftjob-${id}`)).status, "queued");
    const error = await client.fineTuning.jobs.resume(`ftjob-${id}`).catch((caught: unknown) => caught);
    assert.ok(error instanceof OpenAI.ConflictError);
    assert.equal(error.code, "job_not_paused");
  });
});
