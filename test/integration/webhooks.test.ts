// Webhooks end to end with a real worker process: a job's outcome reaches a local HTTP receiver,
// signed so that both the standardwebhooks package and the openai SDK's webhooks.unwrap verify it; a
// receiver that fails twice gets it on the third try, with an API process and the delivering worker
// both restarted between tries; a host outside WEBHOOK_ALLOWED_HOSTS gets no request at all; a
// delivery is sent again on request with its webhook-id; only the first KB of an answer is kept; a
// delivery past its retry window fails; job.progress goes only to endpoints that chose it, at most
// once a minute per job (the outbox trigger's limiter), and one reaches its receiver from a real run.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { Webhook } from "standardwebhooks";
import request from "supertest";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { freePort } from "../helpers/redis-server.ts";
import { trainingFixture } from "../helpers/training-fixture.ts";
import { serveWithWorker, ServiceProcess, waitFor } from "../helpers/worker-harness.ts";

interface Received {
  headers: Record<string, string>;
  body: string;
}

/** A local receiver answering `statuses` in turn (then 200, or `otherwise`), with `answer` as body, keeping every request. */
async function receiver(statuses: number[], answer = "", otherwise = 200): Promise<{ url: string; host: string; requests: Received[]; close(): Promise<void> }> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      requests.push({ headers: req.headers as Record<string, string>, body });
      res.writeHead(statuses[requests.length - 1] ?? otherwise).end(answer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `http://${host}/hooks`, host, requests, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A local server that redirects every request to `location`, and one that never answers. */
async function server(handler: http.RequestListener): Promise<{ url: string; host: string; hits: () => number; close(): Promise<void> }> {
  let hits = 0;
  const instance = http.createServer((req, res) => {
    hits += 1;
    handler(req, res);
  });
  await new Promise<void>((resolve) => instance.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${(instance.address() as AddressInfo).port}`;
  return {
    url: `http://${host}/hooks`,
    host,
    hits: () => hits,
    close: () => {
      instance.closeAllConnections();
      return new Promise((resolve) => instance.close(() => resolve()));
    },
  };
}

describe("webhooks", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let flaky: Awaited<ReturnType<typeof receiver>>;
  let forbidden: Awaited<ReturnType<typeof receiver>>;
  let sink: Awaited<ReturnType<typeof receiver>>;
  let failing: Awaited<ReturnType<typeof receiver>>;
  let progress: Awaited<ReturnType<typeof receiver>>;
  let redirectTarget: Awaited<ReturnType<typeof receiver>>;
  let redirecting: Awaited<ReturnType<typeof server>>;
  let silent: Awaited<ReturnType<typeof server>>;
  let workerEnv: Record<string, string>;
  let datasetId: string;
  const post = (path: string) => request(api.app.server).post(path).set("authorization", api.keys.a);
  const cancelledJob = async () => {
    const job = await post("/v1/jobs").send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(201);
    // 200 while queued; 202 if the worker took it first, and it then writes the cancelled event.
    const cancel = await post(`/v1/jobs/${job.body.id}/cancel`);
    assert.ok([200, 202].includes(cancel.status), `cancel answered ${cancel.status}`);
    return job.body.id as string;
  };

  before(async () => {
    flaky = await receiver([500, 503]);
    forbidden = await receiver([]);
    sink = await receiver([], "x".repeat(3000));
    failing = await receiver([], "down", 500);
    progress = await receiver([]);
    redirectTarget = await receiver([]);
    redirecting = await server((_req, res) => res.writeHead(307, { location: redirectTarget.url }).end());
    silent = await server(() => {});
    const env = { WEBHOOK_ALLOWED_HOSTS: [flaky, sink, failing, progress, redirectTarget, redirecting, silent].map((r) => r.host).join(","), WEBHOOK_RETRY_BASE_MS: "1500", WEBHOOK_POLL_INTERVAL_MS: "100", WEBHOOK_TIMEOUT_MS: "2000" };
    api = await startTestApi("webhooks", env);
    ({ worker } = await serveWithWorker(api, env));
    workerEnv = { DATABASE_URL: api.db.url, REDIS_URL: api.config.redisUrl, QUEUE_PREFIX: String(api.queue.opts.prefix), DATA_DIR: api.config.dataDir, MODELS_DIR: api.modelsDir, ...env };
    datasetId = (await post("/v1/datasets").attach("file", jsonl(classificationRecords(6)), "d.jsonl").expect(201)).body.id;
    await trainingFixture(api.modelsDir);
  });
  after(async () => {
    await worker.stop();
    await api.close();
    for (const running of [flaky, forbidden, sink, failing, progress, redirectTarget, redirecting, silent]) await running.close();
  });

  it("refuses endpoints outside WEBHOOK_ALLOWED_HOSTS", async () => {
    for (const url of [forbidden.url, "http://169.254.169.254/latest/meta-data", "file:///etc/passwd", `http://user:pw@${flaky.host}/`]) {
      const refused = await post("/v1/webhooks").send({ url }).expect(400);
      assert.equal(refused.body.error.code, "webhook_host_not_allowed", url);
    }
  });

  /** An API process on this file's database, answering /v1 once ready; its deliveries listing for `endpointId`. */
  async function apiProcessDeliveries(endpointId: string): Promise<{ process: ServiceProcess; deliveries: () => Promise<{ status: string; attempts: number }[]> }> {
    const port = await freePort();
    const process = ServiceProcess.api({ ...workerEnv, PORT: String(port), TRAINER_BACKEND: "cpu" });
    const deliveries = async () => {
      const response = await fetch(`http://127.0.0.1:${port}/v1/webhooks/${endpointId}/deliveries`, { headers: { authorization: api.keys.a } });
      return ((await response.json()) as { data: { status: string; attempts: number }[] }).data;
    };
    await waitFor(() => fetch(`http://127.0.0.1:${port}/healthz`).then((response) => response.ok, () => false), 30_000, `the API process to listen\n${process.log}`);
    return { process, deliveries };
  }

  it("delivers a job's outcome signed, on the third try after two failures, across API and worker restarts", async () => {
    const endpoint = await post("/v1/webhooks").send({ url: flaky.url }).expect(201);
    const secret = endpoint.body.secret as string;
    assert.match(secret, /^whsec_/);
    assert.equal((await request(api.app.server).get("/v1/webhooks").set("authorization", api.keys.a).expect(200)).body.data[0].secret, undefined, "the secret is shown once");

    const jobId = await cancelledJob();
    const delivery = () => api.db.prisma.webhookDelivery.findFirstOrThrow({ where: { endpointId: endpoint.body.id } });
    await waitFor(async () => (await delivery()).attempts === 1, 20_000, `the first (failing) try to be recorded\n${worker.log}`);
    // Between tries an API process restarts, and so does the worker that sent the first try: the
    // outbox is in Postgres, so the restarted API still shows the pending delivery and the next
    // worker sends the rest.
    await worker.stop();
    const firstApi = await apiProcessDeliveries(endpoint.body.id);
    assert.deepEqual((await firstApi.deliveries()).map(({ status, attempts }) => ({ status, attempts })), [{ status: "pending", attempts: 1 }]);
    await firstApi.process.stop();
    const secondApi = await apiProcessDeliveries(endpoint.body.id);
    try {
      assert.deepEqual((await secondApi.deliveries()).map(({ status, attempts }) => ({ status, attempts })), [{ status: "pending", attempts: 1 }]);
      worker = ServiceProcess.worker(workerEnv);
      await waitFor(async () => (await secondApi.deliveries())[0]?.status === "delivered", 30_000, `the restarted API to report the delivery\n${worker.log}`);
    } finally {
      await secondApi.process.stop();
    }
    await waitFor(async () => (await delivery()).status === "delivered", 30_000, `the third try to be delivered; ${flaky.requests.length} tries so far\n${worker.log}`);

    assert.equal(flaky.requests.length, 3);
    const row = await delivery();
    assert.equal(row.attempts, 3);
    assert.equal(row.lastStatus, 200);
    assert.equal(new Set(flaky.requests.map((received) => received.headers["webhook-id"])).size, 1, "one message id across tries");
    const { headers, body } = flaky.requests[2];
    const verified = new Webhook(secret).verify(body, headers) as { type: string; data: { id: string } };
    assert.equal(verified.type, "fine_tuning.job.cancelled");
    assert.equal(verified.data.id, `ftjob-${jobId}`);
    const unwrapped = await new OpenAI({ apiKey: "unused" }).webhooks.unwrap(body, headers, secret);
    assert.deepEqual(unwrapped, JSON.parse(body));
    assert.throws(() => new Webhook(secret).verify(body.replace("cancelled", "succeeded"), headers), "a changed body does not verify");
    const listed = await request(api.app.server).get(`/v1/webhooks/${endpoint.body.id}/deliveries`).set("authorization", api.keys.a).expect(200);
    assert.equal(listed.body.data[0].status, "delivered");
  });

  it("sends nothing at all to a host that is not allowed at delivery time", async () => {
    const tenant = await api.db.prisma.tenant.findUniqueOrThrow({ where: { name: "tenant-a" } });
    // As if it had been allowed when it was added: the guard is checked again before every send.
    const endpoint = await api.db.prisma.webhookEndpoint.create({ data: { tenantId: tenant.id, url: forbidden.url, secret: "whsec_c2VjcmV0" } });
    await cancelledJob();
    const refused = await waitFor(
      async () => {
        const row = await api.db.prisma.webhookDelivery.findFirst({ where: { endpointId: endpoint.id } });
        return row?.status === "failed" ? row : undefined;
      },
      20_000,
      `the delivery to the disallowed host to be refused\n${worker.log}`,
    );
    assert.match(refused.lastError ?? "", /not in WEBHOOK_ALLOWED_HOSTS/);
    assert.equal(refused.attempts, 0);
    assert.equal(forbidden.requests.length, 0, "no request reached the disallowed host");
  });

  const deliveryOf = (endpointId: string, where: object = {}) => api.db.prisma.webhookDelivery.findFirst({ where: { endpointId, ...where }, orderBy: { createdAt: "asc" } });

  it("sends a delivery again on request, with the same webhook-id, and keeps only the first KB of answers", async () => {
    const endpoint = (await post("/v1/webhooks").send({ url: sink.url }).expect(201)).body.id as string;
    await cancelledJob();
    const first = await waitFor(async () => {
      const row = await deliveryOf(endpoint);
      return row?.status === "delivered" ? row : undefined;
    }, 20_000, () => `the delivery to the sink\n${worker.log}`);
    assert.equal(first.lastResponse?.length, 1024, "the 3000-byte answer is kept to 1 KB");
    assert.equal(sink.requests.length, 1);

    const again = await post(`/v1/webhooks/${endpoint}/deliveries/${first.id}/redeliver`).expect(202);
    assert.equal(again.body.status, "pending");
    assert.equal(again.body.attempts, 0);
    await waitFor(async () => sink.requests.length === 2 && (await deliveryOf(endpoint))?.status === "delivered", 20_000, () => `the redelivery\n${worker.log}`);
    assert.equal(sink.requests[1].headers["webhook-id"], sink.requests[0].headers["webhook-id"], "the same message id");
    assert.equal(sink.requests[1].body, sink.requests[0].body, "the same event");

    assert.equal((await post(`/v1/webhooks/${endpoint}/deliveries/${endpoint}/redeliver`).expect(404)).body.error.code, "not_found");
    const other = await request(api.app.server).post(`/v1/webhooks/${endpoint}/deliveries/${first.id}/redeliver`).set("authorization", api.keys.b).expect(404);
    assert.equal(other.body.error.code, "not_found", "another tenant's endpoint");
  });

  it("follows no redirect, and gives up a try that gets no answer within WEBHOOK_TIMEOUT_MS", async () => {
    const redirected = (await post("/v1/webhooks").send({ url: redirecting.url }).expect(201)).body.id as string;
    const unanswered = (await post("/v1/webhooks").send({ url: silent.url }).expect(201)).body.id as string;
    const started = Date.now();
    await cancelledJob();
    const tried = (endpointId: string) =>
      waitFor(async () => {
        const row = await deliveryOf(endpointId);
        return row && row.attempts >= 1 ? row : undefined;
      }, 20_000, () => `a try to ${endpointId}\n${worker.log}`);
    const afterRedirect = await tried(redirected);
    assert.equal(afterRedirect.status, "pending");
    assert.equal(afterRedirect.lastStatus, 307);
    assert.equal(redirectTarget.requests.length, 0, "the redirect's target got nothing");
    const afterSilence = await tried(unanswered);
    assert.equal(afterSilence.status, "pending");
    assert.equal(afterSilence.lastStatus, null);
    assert.match(afterSilence.lastError ?? "", /timeout|aborted/i);
    assert.ok(silent.hits() >= 1);
    assert.ok(Date.now() - started >= 2000, "the try waited out WEBHOOK_TIMEOUT_MS (2 s here)");
    await api.db.prisma.webhookEndpoint.deleteMany({ where: { id: { in: [redirected, unanswered] } } });
  });

  it("marks a delivery failed once it has been retried for its whole window", async () => {
    const endpoint = (await post("/v1/webhooks").send({ url: failing.url }).expect(201)).body.id as string;
    await cancelledJob();
    const tried = await waitFor(async () => {
      const row = await deliveryOf(endpoint);
      return row && row.attempts >= 1 ? row : undefined;
    }, 20_000, () => `the first try\n${worker.log}`);
    assert.equal(tried.status, "pending", "a failed try is retried");
    assert.equal(tried.lastResponse, "down");
    // As if it had been queued 24 h and a minute ago: the next failed try is its last.
    await api.db.prisma.webhookDelivery.update({ where: { id: tried.id }, data: { queuedAt: new Date(Date.now() - 24 * 3_600_000 - 60_000) } });
    const failed = await waitFor(async () => {
      const row = await deliveryOf(endpoint);
      return row?.status === "failed" ? row : undefined;
    }, 20_000, () => `the delivery to fail\n${worker.log}`);
    assert.equal(failed.lastStatus, 500);
  });

  it("queues job.progress only for endpoints that chose it, at most once a minute per job", async () => {
    const tenant = await api.db.prisma.tenant.findUniqueOrThrow({ where: { name: "tenant-a" } });
    // Endpoints made directly: this test looks at the outbox, not at sends.
    const optedIn = await api.db.prisma.webhookEndpoint.create({ data: { tenantId: tenant.id, url: "http://limiter.invalid/", secret: "whsec_c2VjcmV0", events: ["job.progress"] } });
    const outcomesOnly = await api.db.prisma.webhookEndpoint.create({ data: { tenantId: tenant.id, url: "http://limiter.invalid/", secret: "whsec_c2VjcmV0" } });
    // A row no worker will touch: the only step events are the ones written here.
    const jobId = (await api.db.prisma.job.create({ data: { tenantId: tenant.id, task: "classification", baseModelId: "tiny-distilbert", trainDatasetId: datasetId, loraConfig: {}, hyperparameters: {}, status: "cancelled" } })).id;
    const step = (n: number) => api.db.prisma.jobEvent.create({ data: { jobId, type: "step", message: `step ${n}`, data: { step: n } } });
    const progressRows = async (endpointId: string) => api.db.prisma.webhookDelivery.findMany({ where: { endpointId, eventType: "job.progress" }, orderBy: { createdAt: "asc" } });
    for (const n of [1, 2, 3]) await step(n);
    const first = await progressRows(optedIn.id);
    assert.equal(first.length, 1, "three steps within a minute: one delivery");
    assert.deepEqual((first[0].payload as { data: { progress: unknown } }).data.progress, { step: 1 });
    assert.equal((await progressRows(outcomesOnly.id)).length, 0, "not chosen: none");
    assert.equal(await api.db.prisma.webhookDelivery.count({ where: { endpointId: optedIn.id, eventType: { not: "job.progress" } } }), 0, "outcomes not chosen: none");
    // A minute later (the mark moved back), the next step is sent.
    await api.db.prisma.webhookProgressMark.update({ where: { endpointId_jobId: { endpointId: optedIn.id, jobId } }, data: { queuedAt: new Date(Date.now() - 61_000) } });
    await step(4);
    await step(5);
    const later = await progressRows(optedIn.id);
    assert.equal(later.length, 2);
    assert.deepEqual((later[1].payload as { data: { progress: unknown } }).data.progress, { step: 4 });
    await api.db.prisma.webhookEndpoint.deleteMany({ where: { id: { in: [optedIn.id, outcomesOnly.id] } } });
  });

  it("delivers a running job's progress, signed, to an endpoint that opted in", async () => {
    const endpoint = await post("/v1/webhooks").send({ url: progress.url, events: ["job.progress"] }).expect(201);
    assert.deepEqual(endpoint.body.events, ["job.progress"]);
    assert.equal((await post("/v1/webhooks").send({ url: progress.url, events: ["job.step"] }).expect(400)).body.error.code, "validation_failed");
    const job = await post("/v1/jobs").send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId, hyperparameters: { epochs: 2, batchSize: 2, maxSeqLength: 16 } }).expect(201);
    const jobId = job.body.id as string;
    const ofThisJob = () => progress.requests.filter((received) => (JSON.parse(received.body) as { data: { id: string } }).data.id === `ftjob-${jobId}`);
    await waitFor(async () => ofThisJob().length > 0, 60_000, () => `a job.progress delivery\n${worker.log}`);
    const { headers, body } = ofThisJob()[0];
    const event = new Webhook(endpoint.body.secret).verify(body, headers) as { type: string; data: { id: string; progress: { step: number; totalSteps: number } } };
    assert.equal(event.type, "job.progress");
    assert.equal(event.data.id, `ftjob-${jobId}`);
    assert.ok(event.data.progress.step >= 1 && event.data.progress.totalSteps >= event.data.progress.step, JSON.stringify(event.data));
    await waitFor(async () => (await api.db.prisma.job.findUniqueOrThrow({ where: { id: jobId } })).status === "succeeded", 60_000, () => `the job to succeed\n${worker.log}`);
    // The job took well under a minute: one progress event, and no outcome events it did not choose.
    const rows = await api.db.prisma.webhookDelivery.findMany({ where: { endpointId: endpoint.body.id } });
    assert.deepEqual(
      rows.filter((row) => (row.payload as { data: { id: string } }).data.id === `ftjob-${jobId}`).map((row) => row.eventType),
      ["job.progress"],
    );
  });
});
