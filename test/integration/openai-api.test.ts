// The OpenAI-compatible surface driven by the official `openai` SDK against a real API (no worker):
// files, job creation with "auto" resolved by the documented rule, the SDK's auto-paging, cancel,
// events, and our errors surfacing as the SDK's APIError subclasses with our status and code.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import OpenAI, { toFile } from "openai";
import { autoBatchSize, autoEpochs, BASE_LEARNING_RATE } from "../../services/api/openai/hyperparameters.ts";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

/** The SDK's error for `promise`, asserted to be an APIError with this status and code. */
async function apiError(promise: Promise<unknown>, status: number, code: string, param?: string | null): Promise<InstanceType<typeof OpenAI.APIError>> {
  const error = await promise.then(
    () => assert.fail(`expected ${status} ${code}, got a success`),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof OpenAI.APIError, `not an APIError: ${String(error)}`);
  assert.equal(error.status, status, error.message);
  assert.equal(error.code, code, error.message);
  if (param !== undefined) assert.equal(error.param, param);
  assert.ok(!/\bat .*\.ts:\d+/.test(JSON.stringify(error.error)), "no stack trace");
  return error;
}

describe("OpenAI-compatible API through the openai SDK", () => {
  let api: TestApi;
  let client: OpenAI;
  let other: OpenAI;
  let classificationFile: string;
  const chat = [
    { messages: [{ role: "system", content: "You are terse." }, { role: "user", content: "Say hi" }, { role: "assistant", content: "hi" }] },
    { messages: [{ role: "user", content: "Say bye" }, { role: "assistant", content: "bye" }] },
  ];

  before(async () => {
    api = await startTestApi("openai_api");
    await api.app.listen({ host: "127.0.0.1", port: 0 });
    const baseURL = `http://127.0.0.1:${(api.app.server.address() as { port: number }).port}/v1`;
    // No retries: a 409 or 429 must reach the test as it was answered.
    client = new OpenAI({ baseURL, apiKey: api.keys.a.replace(/^Bearer /, ""), maxRetries: 0 });
    other = new OpenAI({ baseURL, apiKey: api.keys.b.replace(/^Bearer /, ""), maxRetries: 0 });
  });
  after(async () => api.close());

  it("uploads, lists, retrieves, reads and deletes files in OpenAI's formats and ours", async () => {
    const chatFile = await client.files.create({ file: await toFile(jsonl(chat), "chat.jsonl"), purpose: "fine-tune" });
    assert.match(chatFile.id, /^file-[0-9a-f-]{36}$/);
    assert.equal(chatFile.object, "file");
    assert.equal(chatFile.purpose, "fine-tune");
    assert.equal(chatFile.status, "processed");
    assert.equal(chatFile.filename, "chat.jsonl");
    assert.equal(chatFile.bytes, jsonl(chat).length);
    const completion = await client.files.create({ file: await toFile(jsonl([{ prompt: "2+2=", completion: "4" }]), "pc.jsonl"), purpose: "fine-tune" });
    const classification = await client.files.create({ file: await toFile(jsonl(classificationRecords(12)), "cls.jsonl"), purpose: "fine-tune" });
    classificationFile = classification.id;
    const rows = await api.db.prisma.dataset.findMany({ orderBy: { createdAt: "asc" } });
    assert.deepEqual(rows.map((row) => row.format), ["chat", "completion", "classification"]);

    const listed = [];
    for await (const file of client.files.list({ limit: 2 })) listed.push(file.id);
    assert.deepEqual(listed, [classification.id, completion.id, chatFile.id]);
    assert.deepEqual((await client.files.retrieve(chatFile.id)).id, chatFile.id);
    assert.equal(await (await client.files.content(chatFile.id)).text(), jsonl(chat).toString());
    assert.deepEqual(await client.files.delete(completion.id), { id: completion.id, object: "file", deleted: true });
    await apiError(client.files.retrieve(completion.id), 404, "not_found");
    await apiError(other.files.retrieve(chatFile.id), 404, "not_found");
  });

  it("refuses bad uploads with OpenAI's error shape and our codes", async () => {
    await apiError(client.files.create({ file: await toFile(jsonl(chat), "c.jsonl"), purpose: "batch" }), 400, "unsupported_purpose", "purpose");
    const bad = await apiError(client.files.create({ file: await toFile(Buffer.from('{"messages": []}\n'), "bad.jsonl"), purpose: "fine-tune" }), 422, "invalid_dataset");
    assert.equal(bad.type, "invalid_request_error");
    assert.equal(await api.db.prisma.dataset.count({ where: { name: "bad.jsonl" } }), 0);
  });

  it('creates a job with "auto" everywhere, resolved from the dataset size by the documented rule', async () => {
    const job = await client.fineTuning.jobs.create({
      model: "tiny-distilbert",
      training_file: classificationFile,
      suffix: "sentiment",
      seed: 7,
      metadata: { team: "search" },
      method: { type: "supervised", supervised: { hyperparameters: { n_epochs: "auto", batch_size: "auto", learning_rate_multiplier: "auto" } } },
    });
    assert.match(job.id, /^ftjob-/);
    assert.equal(job.object, "fine_tuning.job");
    assert.equal(job.status, "queued");
    assert.equal(job.model, "tiny-distilbert");
    assert.equal(job.training_file, classificationFile);
    assert.equal(job.validation_file, null);
    assert.equal(job.fine_tuned_model, null);
    assert.equal(job.seed, 7);
    assert.deepEqual(job.metadata, { team: "search" });
    // 12 examples: 3 epochs would show only 36, so ceil(100 / 12) = 9; batch ceil(12 × 0.002) = 1.
    assert.equal(autoEpochs(12), 9);
    assert.deepEqual(job.hyperparameters, { n_epochs: 9, batch_size: autoBatchSize(12), learning_rate_multiplier: 1 });
    assert.deepEqual(job.method, { type: "supervised", supervised: { hyperparameters: job.hyperparameters } });
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: job.id.slice("ftjob-".length) } });
    assert.equal(row.suffix, "sentiment");
    assert.deepEqual(row.hyperparameters, { ...(row.hyperparameters as object), epochs: 9, batchSize: 1, learningRate: BASE_LEARNING_RATE, seed: 7 });
    assert.ok(await api.queue.getJob(row.id), "queued in BullMQ under its own id");

    const explicit = await client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile, hyperparameters: { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2.5 } });
    assert.deepEqual(explicit.hyperparameters, { n_epochs: 2, batch_size: 4, learning_rate_multiplier: 2.5 });
    const explicitRow = await api.db.prisma.job.findUniqueOrThrow({ where: { id: explicit.id.slice("ftjob-".length) } });
    assert.equal((explicitRow.hyperparameters as { learningRate: number }).learningRate, BASE_LEARNING_RATE * 2.5);
    assert.equal(autoEpochs(20_000), 1);
    assert.equal(autoBatchSize(1_000_000), 256);
  });

  it("auto-pages a list of 25 more jobs with the SDK, newest first, each once", async () => {
    const created: string[] = [];
    for (let index = 0; index < 25; index++) {
      created.push((await client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile, metadata: { batch: "25" } })).id);
    }
    const seen: string[] = [];
    for await (const job of client.fineTuning.jobs.list({ limit: 7, metadata: { batch: "25" } })) seen.push(job.id);
    assert.deepEqual(seen, created.reverse());
    const first = await client.fineTuning.jobs.list({ limit: 10 });
    assert.equal(first.data.length, 10);
    assert.equal(first.has_more, true);
    assert.equal((await other.fineTuning.jobs.list()).data.length, 0, "another tenant sees none");
  });

  it("retrieves, cancels and lists events and checkpoints of a queued job", async () => {
    const job = await client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile });
    assert.equal((await client.fineTuning.jobs.retrieve(job.id)).id, job.id);
    const cancelled = await client.fineTuning.jobs.cancel(job.id);
    assert.equal(cancelled.status, "cancelled");
    assert.ok(cancelled.finished_at);
    await apiError(client.fineTuning.jobs.cancel(job.id), 409, "job_finished");
    const events = [];
    for await (const event of client.fineTuning.jobs.listEvents(job.id, { limit: 1 })) events.push(event);
    assert.deepEqual(events.map((event) => event.message), ["cancelled before it started", `Created fine-tuning job: ${job.id}`]);
    assert.ok(events.every((event) => event.object === "fine_tuning.job.event" && event.type === "message" && event.level === "info"));
    assert.deepEqual((await client.fineTuning.jobs.checkpoints.list(job.id)).data, []);
  });

  it("surfaces the service's errors in the SDK as APIError with our status, code and param", async () => {
    await apiError(client.fineTuning.jobs.retrieve("ftjob-00000000-0000-4000-8000-000000000000"), 404, "not_found");
    await apiError(client.fineTuning.jobs.retrieve("not-an-id"), 404, "not_found");
    const job = (await client.fineTuning.jobs.list({ limit: 1 })).data[0];
    await apiError(other.fineTuning.jobs.retrieve(job.id), 404, "not_found");
    await apiError(client.fineTuning.jobs.create({ model: "gpt-4o-mini", training_file: classificationFile }), 422, "invalid_reference", "model");
    await apiError(client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: "file-00000000-0000-4000-8000-000000000000" }), 422, "invalid_reference", "training_file");
    await apiError(
      client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile, method: { type: "dpo", dpo: {} } }),
      400,
      "unsupported_method",
      "method.type",
    );
    await apiError(
      client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile, hyperparameters: { n_epochs: 0 } }),
      400,
      "validation_failed",
    );
    await apiError(
      client.fineTuning.jobs.create({ model: "tiny-distilbert", training_file: classificationFile, hyperparameters: { learning_rate_multiplier: 10_000 } }),
      400,
      "invalid_hyperparameter",
      "hyperparameters.learning_rate_multiplier",
    );
    await apiError(client.fineTuning.jobs.list({ limit: 1000 }), 400, "invalid_limit", "limit");
    await apiError(client.files.delete(classificationFile), 409, "dataset_in_use");
    const unauthorized = await apiError(new OpenAI({ baseURL: client.baseURL, apiKey: "wrong", maxRetries: 0 }).files.list(), 401, "unauthorized");
    assert.ok(unauthorized instanceof OpenAI.AuthenticationError);
  });
});
