import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { JobSql } from "../../services/api/job-sql.ts";
import { bullPriority } from "../../services/common/queue.ts";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

describe("jobs API", () => {
  let api: TestApi;
  let classification: string;
  let completion: string;
  let otherTenantDataset: string;
  const submit = (body: object, key?: string, headers: Record<string, string> = {}) =>
    request(api.app.server).post("/v1/jobs").set("authorization", key ?? api.keys.a).set(headers).send(body);
  const get = (path: string, key?: string) => request(api.app.server).get(path).set("authorization", key ?? api.keys.a);
  const uploadAs = async (key: string, body: Buffer) =>
    (await request(api.app.server).post("/v1/datasets").set("authorization", key).attach("file", body, "d.jsonl").expect(201)).body.id as string;

  before(async () => {
    api = await startTestApi("jobs", { EVENTS_POLL_INTERVAL_MS: "20", SSE_HEARTBEAT_MS: "60" });
    classification = await uploadAs(api.keys.a, jsonl(classificationRecords(12)));
    completion = await uploadAs(api.keys.a, jsonl([{ prompt: "say hi", completion: "hi" }]));
    otherTenantDataset = await uploadAs(api.keys.b, jsonl(classificationRecords(3)));
  });
  after(async () => api.close());

  it("stores the job first, queues it under its own id with its priority, and resolves defaults", async () => {
    const response = await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, priority: 80, metadata: { team: "search" } }).expect(201);
    const job = response.body;
    assert.equal(job.status, "queued");
    assert.equal(job.task, "classification");
    assert.deepEqual(job.lora, { r: 8, alpha: 16, dropout: 0.05, useRslora: false, quantization: "none", doubleQuant: false, targetModules: ["q_lin", "v_lin"] });
    assert.equal(job.hyperparameters.epochs, 3);
    assert.equal(job.hyperparameters.seed, 42);
    assert.deepEqual(job.metadata, { team: "search" });
    assert.deepEqual(job.progress, {});
    assert.equal(job.adapterId, null);
    assert.ok(job.enqueuedAt);
    const queued = await api.queue.getJob(job.id);
    assert.ok(queued, "the BullMQ job id is the job id");
    assert.deepEqual(queued.data, { jobId: job.id });
    assert.equal(queued.opts.priority, bullPriority(80));
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: job.id } });
    assert.ok(row.enqueuedAt);
  });

  it("infers causal_lm from a completion dataset and uses GPT-2's default modules", async () => {
    const response = await submit({ baseModel: "tiny-gpt2", trainDatasetId: completion, lora: { r: 4, alpha: 8, targetModules: ["c_attn", "c_proj"] } }).expect(201);
    assert.equal(response.body.task, "causal_lm");
    assert.deepEqual(response.body.lora.targetModules, ["c_attn", "c_proj"]);
    assert.equal(response.body.lora.r, 4);
  });

  it("refuses lora.quantization for a model whose linear layers cannot be quantized", async () => {
    const response = await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, lora: { quantization: "nf4" } }).expect(422);
    assert.equal(response.body.error.code, "invalid_settings");
    assert.match(response.body.error.message, /Llama-family/);
  });

  it("rejects unknown fields and wrong types with field paths", async () => {
    const unknown = await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, colour: "red", lora: { r: 8, rank: 4 } }).expect(400);
    assert.equal(unknown.body.error.code, "validation_failed");
    const paths = unknown.body.error.details.map((detail: { path: string }) => detail.path);
    assert.ok(paths.includes("body.colour"), paths.join());
    assert.ok(paths.includes("body.lora.rank"), paths.join());
    const types = await submit({ baseModel: 7, trainDatasetId: classification, lora: { r: "8" }, hyperparameters: { epochs: 1.5, learningRate: "fast" } }).expect(400);
    const typePaths = types.body.error.details.map((detail: { path: string }) => detail.path);
    for (const path of ["body.baseModel", "body.lora.r", "body.hyperparameters.epochs", "body.hyperparameters.learningRate"]) assert.ok(typePaths.includes(path), typePaths.join());
    await submit({ trainDatasetId: classification }).expect(400);
    await submit({ baseModel: "tiny-distilbert", trainDatasetId: "nope" }).expect(400);
    await request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).set("content-type", "application/json").send("{bad json").expect(400);
  });

  it("bounds LoRA rank, dropout, priority and metadata", async () => {
    const base = { baseModel: "tiny-distilbert", trainDatasetId: classification };
    for (const r of [0, 257]) {
      const response = await submit({ ...base, lora: { r } }).expect(400);
      assert.equal(response.body.error.details[0].path, "body.lora.r");
    }
    await submit({ ...base, lora: { r: 256, dropout: 0 } }).expect(201);
    await submit({ ...base, lora: { dropout: 1.5 } }).expect(400);
    await submit({ ...base, priority: 101 }).expect(400);
    const many = Object.fromEntries(Array.from({ length: 17 }, (_, index) => [`k${index}`, "v"]));
    const tooMany = await submit({ ...base, metadata: many }).expect(400);
    assert.equal(tooMany.body.error.details[0].path, "body.metadata");
    const notString = await submit({ ...base, metadata: { n: 1 } }).expect(400);
    assert.equal(notString.body.error.details[0].path, "body.metadata.n");
    await submit({ ...base, validationDatasetId: classification, validationSplit: 0.1 }).expect(400);
  });

  it("answers 422 for references that do not exist, belong to another tenant, or do not fit", async () => {
    const missingModel = await submit({ baseModel: "no-such-model", trainDatasetId: classification }).expect(422);
    assert.equal(missingModel.body.error.details[0].path, "body.baseModel");
    const foreign = await submit({ baseModel: "tiny-distilbert", trainDatasetId: otherTenantDataset }).expect(422);
    assert.equal(foreign.body.error.details[0].path, "body.trainDatasetId");
    const wrongTask = await submit({ baseModel: "tiny-gpt2", trainDatasetId: classification }).expect(422);
    assert.equal(wrongTask.body.error.details[0].path, "body.baseModel");
    const declared = await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, task: "causal_lm" }).expect(422);
    assert.equal(declared.body.error.details[0].path, "body.task");
    const mixed = await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, validationDatasetId: completion }).expect(422);
    assert.equal(mixed.body.error.details[0].path, "body.validationDatasetId");
    await submit({ baseModel: "mystery-model", trainDatasetId: classification }).expect(422);
  });

  it("replays the same Idempotency-Key and body, and 409s the same key with another body", async () => {
    const body = { baseModel: "tiny-distilbert", trainDatasetId: classification, metadata: { a: "1", b: "2" } };
    const first = await submit(body, undefined, { "idempotency-key": "run-1" }).expect(201);
    const reordered = { metadata: { b: "2", a: "1" }, trainDatasetId: classification, baseModel: "tiny-distilbert" };
    const replay = await submit(reordered, undefined, { "idempotency-key": "run-1" }).expect(200);
    assert.equal(replay.body.id, first.body.id);
    const conflict = await submit({ ...body, priority: 10 }, undefined, { "idempotency-key": "run-1" }).expect(409);
    assert.equal(conflict.body.error.code, "idempotency_conflict");
    const concurrent = await Promise.all([1, 2, 3].map(() => submit(body, undefined, { "idempotency-key": "run-2" })));
    assert.equal(new Set(concurrent.map((response) => response.body.id)).size, 1);
    assert.deepEqual(concurrent.map((response) => response.status).sort(), [200, 200, 201]);
    assert.equal(await api.db.prisma.job.count({ where: { idempotencyKey: "run-2" } }), 1);
    const otherTenant = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: otherTenantDataset }, api.keys.b, { "idempotency-key": "run-1" }).expect(201)).body;
    assert.notEqual(otherTenant.id, first.body.id, "keys are per tenant");
  });

  it("lists with a status filter and a stable cursor; bad cursors and statuses are 400", async () => {
    const all = (await get("/v1/jobs?limit=100").expect(200)).body.data as { id: string; status: string; createdAt: string }[];
    assert.equal(all.length, 5, "one job from each of the four submitting tests, two idempotent ones");
    const sorted = [...all].sort((x, y) => (x.createdAt === y.createdAt ? (x.id < y.id ? 1 : -1) : x.createdAt < y.createdAt ? 1 : -1));
    assert.deepEqual(all.map((job) => job.id), sorted.map((job) => job.id));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const response: request.Response = await get(`/v1/jobs?limit=2${cursor ? `&cursor=${cursor}` : ""}`).expect(200);
      seen.push(...response.body.data.map((job: { id: string }) => job.id));
      // A job added while paging shows on no later page: the order is newest first.
      if (seen.length === 2) await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201);
      cursor = response.body.nextCursor;
    } while (cursor);
    assert.deepEqual(seen, all.map((job) => job.id));
    await api.db.prisma.job.update({ where: { id: all[0].id }, data: { status: "failed" } });
    const failed = await get("/v1/jobs?status=failed").expect(200);
    assert.deepEqual(failed.body.data.map((job: { id: string }) => job.id), [all[0].id]);
    assert.equal((await get("/v1/jobs?status=exploded").expect(400)).body.error.details[0].path, "querystring.status");
    assert.equal((await get("/v1/jobs?cursor=eyJ4IjoxfQ").expect(400)).body.error.code, "invalid_cursor");
    // Well-formed cursors whose values Postgres would refuse are the client's error too, not a 500.
    const forged = (createdAt: string, id: string) => Buffer.from(JSON.stringify([createdAt, id])).toString("base64url");
    for (const [createdAt, id] of [
      ["2026-01-01T00:00:00.000Z", "-".repeat(36)],
      ["2026-01-01T00:00:00.000Z", `urn:uuid:${all[0].id}`.slice(0, 36)],
      ["-271821-04-20T00:00:00.000Z", all[0].id],
    ]) {
      assert.equal((await get(`/v1/jobs?cursor=${forged(createdAt, id)}`).expect(400)).body.error.code, "invalid_cursor", `${createdAt} ${id}`);
    }
    await get("/v1/jobs?limit=0").expect(400);
    await get("/v1/jobs?limit=101").expect(400);
    const foreign = (await get("/v1/jobs?limit=100", api.keys.b).expect(200)).body.data;
    assert.ok(foreign.every((job: { trainDatasetId: string }) => job.trainDatasetId === otherTenantDataset));
  });

  it("shows status, progress, metrics, error, attempts, timestamps and adapter id", async () => {
    const job = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    const progress = { step: 40, totalSteps: 100, epoch: 1.2, tokens: 5120, loss: 0.42, etaMs: 9000 };
    const startedAt = new Date();
    await api.db.prisma.job.update({
      where: { id: job.id },
      data: { status: "running", progress, metrics: { accuracy: 0.8, loss: 0.4 }, attempts: 1, startedAt },
    });
    const running = (await get(`/v1/jobs/${job.id}`).expect(200)).body;
    assert.equal(running.status, "running");
    assert.deepEqual(running.progress, progress);
    assert.deepEqual(running.metrics, { accuracy: 0.8, loss: 0.4 });
    assert.equal(running.attempts, 1);
    assert.equal(running.startedAt, startedAt.toISOString());
    await api.db.prisma.job.update({ where: { id: job.id }, data: { status: "failed", error: { code: "out_of_memory", message: "too big" }, finishedAt: new Date() } });
    const failed = (await get(`/v1/jobs/${job.id}`).expect(200)).body;
    assert.deepEqual(failed.error, { code: "out_of_memory", message: "too big" });
    assert.ok(failed.finishedAt);
    await get(`/v1/jobs/${job.id}`, api.keys.b).expect(404);
    await get("/v1/jobs/00000000-0000-4000-8000-000000000000").expect(404);
    await get("/v1/jobs/123").expect(400);
  });

  it("answers every poll with the row as it is now, whoever changed it and however", async () => {
    const job = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification, metadata: { poll: "me" } }).expect(201)).body;
    const first = (await get(`/v1/jobs/${job.id}`).expect(200)).body;
    assert.equal((await get(`/v1/jobs/${job.id}`).expect(200)).text, JSON.stringify(first), "an unchanged job answers the same bytes");
    const listed = (await get("/v1/jobs?limit=100").expect(200)).body.data.find((item: { id: string }) => item.id === job.id);
    assert.deepEqual(first, listed, "the status route serializes exactly as the list does");

    // A write that bypasses Prisma and leaves updatedAt alone, as a raw SQL client might.
    await api.db.prisma.$executeRaw`UPDATE "Job" SET status = 'running', progress = ${JSON.stringify({ step: 7, totalSteps: 9 })}::jsonb WHERE id = ${job.id}::uuid`;
    const running = (await get(`/v1/jobs/${job.id}`).expect(200)).body;
    assert.equal(running.status, "running");
    assert.deepEqual(running.progress, { step: 7, totalSteps: 9 });
    assert.equal(running.updatedAt, first.updatedAt);

    // The adapter lives in its own table: creating it does not touch the job row.
    const tenantId = (await api.db.prisma.job.findUniqueOrThrow({ where: { id: job.id } })).tenantId;
    const adapter = await api.db.prisma.adapter.create({
      data: {
        tenantId,
        jobId: job.id,
        baseModelId: "tiny-distilbert",
        task: "classification",
        rank: 8,
        alpha: 16,
        targetModules: ["q_lin"],
        files: [],
        sizeBytes: 1n,
        sha256: "0".repeat(64),
        storageKey: "adapters/none",
        metrics: {},
      },
    });
    assert.equal((await get(`/v1/jobs/${job.id}`).expect(200)).body.adapterId, adapter.id);
    await api.db.prisma.adapter.delete({ where: { id: adapter.id } });
    assert.equal((await get(`/v1/jobs/${job.id}`).expect(200)).body.adapterId, null);
    await get(`/v1/jobs/${job.id}`, api.keys.b).expect(404);

    // Lookups made in one event-loop turn go to Postgres as one statement; each still gets its own tenant's answer.
    const other = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    const tenantB = (await api.db.prisma.dataset.findUniqueOrThrow({ where: { id: otherTenantDataset } })).tenantId;
    const jobSql = new JobSql(api.db.url, api.db.outages);
    try {
      const lookups = [
        [job.id, tenantId],
        [job.id, tenantB],
        [other.id, tenantId],
        [job.id.toUpperCase(), tenantId],
        ["00000000-0000-4000-8000-000000000000", tenantId],
      ] as const;
      const versions = await Promise.all(lookups.map(([id, tenant]) => jobSql.jobVersion(id, tenant)));
      assert.deepEqual(versions.map((version) => version !== undefined), [true, false, true, true, false]);
      assert.equal(versions[0], versions[3]);
      assert.notEqual(versions[0], versions[2]);
      assert.equal(versions[0], (await jobSql.jobOfTenant(job.id, tenantId, versions[0]!))?.version);
    } finally {
      await jobSql.close();
    }
    assert.equal((await get(`/v1/jobs/${job.id.toUpperCase()}`).expect(200)).body.id, job.id, "ids are case-insensitive");
    const urn = await get(`/v1/jobs/urn:uuid:${job.id}`).expect(400);
    assert.equal(urn.body.error.code, "validation_failed");
    await submit({ baseModel: "tiny-distilbert", trainDatasetId: `urn:uuid:${classification}` }).expect(400);
  });

  it("answers a poll with every change committed before it arrived, however busy the job's other pollers are", async () => {
    const job = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    const poll = () => api.app.inject({ method: "GET", url: `/v1/jobs/${job.id}`, headers: { authorization: api.keys.a } });
    let polling = true;
    const pollers = Array.from({ length: 8 }, async () => {
      while (polling) assert.equal((await poll()).statusCode, 200);
    });
    try {
      // Each write is another client's (a worker, another API replica): committed, then polled at once.
      for (let step = 1; step <= 150; step += 1) {
        await api.db.prisma.job.update({ where: { id: job.id }, data: { progress: { step } } });
        assert.equal((await poll()).json().progress.step, step);
      }
      // And a client's own cancel, answered 202, is what its next poll shows.
      await api.db.prisma.job.update({ where: { id: job.id }, data: { status: "running" } });
      assert.equal((await api.app.inject({ method: "POST", url: `/v1/jobs/${job.id}/cancel`, headers: { authorization: api.keys.a } })).statusCode, 202);
      assert.equal((await poll()).json().status, "cancelling");
    } finally {
      polling = false;
      await Promise.all(pollers);
    }
  });

  it("cancels queued jobs at once, running ones via cancelling, and 409s finished ones", async () => {
    const cancel = (id: string, key?: string) => request(api.app.server).post(`/v1/jobs/${id}/cancel`).set("authorization", key ?? api.keys.a);
    const queued = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    assert.ok(await api.queue.getJob(queued.id));
    const cancelled = await cancel(queued.id).expect(200);
    assert.equal(cancelled.body.status, "cancelled");
    assert.ok(cancelled.body.finishedAt);
    assert.equal(await api.queue.getJob(queued.id), undefined, "removed from the queue");
    assert.equal((await cancel(queued.id).expect(409)).body.error.code, "job_finished");

    const running = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    await api.db.prisma.job.update({ where: { id: running.id }, data: { status: "running" } });
    const cancelling = await cancel(running.id).expect(202);
    assert.equal(cancelling.body.status, "cancelling");
    assert.ok(cancelling.body.cancelRequestedAt);
    assert.equal((await cancel(running.id).expect(202)).body.status, "cancelling", "asking again is harmless");

    for (const status of ["succeeded", "failed"] as const) {
      const finished = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
      await api.db.prisma.job.update({ where: { id: finished.id }, data: { status } });
      await cancel(finished.id).expect(409);
    }
    await cancel(running.id, api.keys.b).expect(404);
    await cancel("00000000-0000-4000-8000-000000000000").expect(404);
  });

  it("pages events in order after a given id", async () => {
    const job = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    for (let step = 1; step <= 5; step += 1) {
      await api.db.prisma.jobEvent.create({ data: { jobId: job.id, type: "step", message: `step ${step}`, data: { step, loss: 1 / step } } });
    }
    const first = (await get(`/v1/jobs/${job.id}/events?limit=3`).expect(200)).body;
    assert.deepEqual(first.data.map((event: { message: string }) => event.message), ["step 1", "step 2", "step 3"]);
    assert.equal(first.done, false);
    const rest = (await get(`/v1/jobs/${job.id}/events?after=${first.nextAfter}`).expect(200)).body;
    assert.deepEqual(rest.data.map((event: { data: { step: number } }) => event.data.step), [4, 5]);
    const empty = (await get(`/v1/jobs/${job.id}/events?after=${rest.nextAfter}`).expect(200)).body;
    assert.deepEqual(empty.data, []);
    assert.equal(empty.nextAfter, rest.nextAfter);
    assert.equal((await get(`/v1/jobs/${job.id}/events?after=-1`).expect(400)).body.error.details[0].path, "querystring.after");
    await get(`/v1/jobs/${job.id}/events?after=abc`).expect(400);
    await get(`/v1/jobs/${job.id}/events`, api.keys.b).expect(404);
  });

  it("streams events live with heartbeats and ends when the job finishes", async () => {
    const job = (await submit({ baseModel: "tiny-distilbert", trainDatasetId: classification }).expect(201)).body;
    await api.db.prisma.jobEvent.create({ data: { jobId: job.id, type: "queued", message: "queued" } });
    await api.app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = api.app.server.address() as AddressInfo;
    const received: string[] = [];
    const done = new Promise<{ status: number; type: string; text: string }>((resolve, reject) => {
      const req = http.get(
        { port, host: "127.0.0.1", path: `/v1/jobs/${job.id}/events`, headers: { accept: "text/event-stream", authorization: api.keys.a } },
        (response) => {
          let text = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => {
            text += chunk;
            received.push(chunk);
          });
          response.on("end", () => resolve({ status: response.statusCode ?? 0, type: String(response.headers["content-type"]), text }));
        },
      );
      req.on("error", reject);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    await api.db.prisma.jobEvent.create({ data: { jobId: job.id, type: "step", message: "step 1", data: { step: 1 } } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await api.db.prisma.jobEvent.create({ data: { jobId: job.id, type: "succeeded", message: "done" } });
    await api.db.prisma.job.update({ where: { id: job.id }, data: { status: "succeeded" } });
    const stream = await done;
    assert.equal(stream.status, 200);
    assert.match(stream.type, /^text\/event-stream/);
    const messages = stream.text
      .split("\n\n")
      .filter((block) => block.includes("data: ") && !block.includes("event: end"))
      .map((block) => JSON.parse(block.slice(block.indexOf("data: ") + 6)).message);
    assert.deepEqual(messages, ["queued", "step 1", "done"]);
    assert.match(stream.text, /: heartbeat\n\n/);
    assert.match(stream.text, /event: end\ndata: {"status":"succeeded"}\n\n$/);
    const ids = [...stream.text.matchAll(/^id: (\d+)$/gm)].map((match) => Number(match[1]));
    assert.deepEqual(ids, [...ids].sort((x, y) => x - y));
    const resumed = await get(`/v1/jobs/${job.id}/events`).set("accept", "text/event-stream").set("last-event-id", String(ids[1])).expect(200);
    assert.ok(!resumed.text.includes("step 1") && resumed.text.includes("done"), "Last-Event-ID resumes after that event");
  });
});
