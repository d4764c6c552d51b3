import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { reconcileQueue } from "../../services/common/reconcile.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";

async function waitFor(predicate: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail(`condition not met within ${timeoutMs} ms`);
}

describe("submitting while Redis is down, and the reconciler", () => {
  let api: TestApi;
  let redisServer: PrivateRedis;
  let datasetId: string;
  const submit = (body: object = { baseModel: "tiny-distilbert", trainDatasetId: datasetId }) =>
    request(api.app.server).post("/v1/jobs").set("authorization", api.keys.a).send(body);

  before(async () => {
    redisServer = new PrivateRedis(await freePort());
    await redisServer.start();
    api = await startTestApi("redisdown", { ENQUEUE_TIMEOUT_MS: "300" }, redisServer.url);
    datasetId = (await request(api.app.server).post("/v1/datasets").set("authorization", api.keys.a).attach("file", jsonl(classificationRecords(4)), "d.jsonl").expect(201)).body.id;
  });
  after(async () => {
    // Only a test that failed mid-outage leaves Redis stopped.
    if (api.redis.status !== "ready") await redisServer.start().catch(() => {});
    await api.close();
    await redisServer.stop();
  });

  it("keeps the job as queued with a 202, and the reconciler queues it once Redis is back", async () => {
    const queuedBefore = (await submit().expect(201)).body;
    await redisServer.stop();
    await waitFor(async () => api.redis.status !== "ready", 5000);

    const accepted = await submit().expect(202);
    assert.equal(accepted.body.status, "queued");
    assert.equal(accepted.body.enqueuedAt, null);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: accepted.body.id } });
    assert.equal(row.status, "queued");
    assert.equal(row.enqueuedAt, null);
    // Reads and cancels need only Postgres.
    await request(api.app.server).get(`/v1/jobs/${accepted.body.id}`).set("authorization", api.keys.a).expect(200);
    const doomed = (await submit().expect(202)).body;
    await request(api.app.server).post(`/v1/jobs/${doomed.id}/cancel`).set("authorization", api.keys.a).expect(200);
    const metrics = await request(api.app.server).get("/metrics").expect(200);
    assert.match(metrics.text, /lora_jobs\{status="queued"\} 2/);
    assert.doesNotMatch(metrics.text, /lora_queue_jobs\{/);

    await redisServer.start();
    await waitFor(async () => api.redis.status === "ready", 10_000);
    const result = await reconcileQueue(api.db.prisma, api.queue);
    // The restarted Redis kept nothing, so the job queued before the outage comes back too.
    assert.deepEqual(result.enqueued, [queuedBefore.id, accepted.body.id], "every queued job Redis does not know; not the cancelled one");
    assert.equal(result.checked, 2);
    assert.ok(await api.queue.getJob(accepted.body.id));
    assert.ok((await api.db.prisma.job.findUniqueOrThrow({ where: { id: accepted.body.id } })).enqueuedAt);
    assert.ok((await api.db.prisma.job.findUniqueOrThrow({ where: { id: queuedBefore.id } })).enqueuedAt);
  });

  it("re-enqueues every queued job after Redis lost its data, and is a no-op when run again", async () => {
    const ids = [];
    for (let index = 0; index < 5; index += 1) ids.push((await submit().expect(201)).body.id);
    await api.redis.flushall();
    const result = await reconcileQueue(api.db.prisma, api.queue, { batchSize: 2 });
    const queued = await api.db.prisma.job.findMany({ where: { status: "queued" }, orderBy: [{ createdAt: "asc" }, { id: "asc" }] });
    assert.deepEqual(result.enqueued, queued.map((job) => job.id));
    assert.ok(ids.every((id) => result.enqueued.includes(id)));
    for (const id of ids) assert.ok(await api.queue.getJob(id));
    const again = await reconcileQueue(api.db.prisma, api.queue);
    assert.deepEqual(again.enqueued, []);
    assert.equal(again.checked, queued.length);
  });

  it("can reconcile other statuses the worker names, such as running jobs that lost their BullMQ job", async () => {
    const running = (await submit().expect(201)).body.id;
    await api.db.prisma.job.update({ where: { id: running }, data: { status: "running" } });
    await api.queue.remove(running);
    assert.deepEqual((await reconcileQueue(api.db.prisma, api.queue)).enqueued, []);
    const result = await reconcileQueue(api.db.prisma, api.queue, { statuses: ["running"] });
    assert.deepEqual(result.enqueued, [running]);
  });

  it("ends open event streams when the server shuts down", async () => {
    const job = (await submit().expect(201)).body.id;
    await api.db.prisma.job.update({ where: { id: job }, data: { status: "running" } });
    await api.app.listen({ port: 0, host: "127.0.0.1" });
    const { port } = api.app.server.address() as AddressInfo;
    const ended = new Promise<string>((resolve, reject) => {
      http
        .get({ port, host: "127.0.0.1", agent: false, path: `/v1/jobs/${job}/events`, headers: { accept: "text/event-stream", authorization: api.keys.a } }, (response) => {
          let text = "";
          response.setEncoding("utf8");
          response.on("data", (chunk: string) => (text += chunk));
          response.on("end", () => resolve(text));
        })
        .on("error", reject);
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const started = Date.now();
    const closed = api.app.close();
    const text = await ended;
    assert.ok(Date.now() - started < 3000, `the stream ended ${Date.now() - started} ms after close()`);
    await closed;
    assert.match(text, /^retry: /);
    assert.doesNotMatch(text, /event: end/, "the job did not finish; the stream was cut by the shutdown");
  });
});
