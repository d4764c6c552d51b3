// Webhooks end to end with a real worker process: a job's outcome reaches a local HTTP receiver,
// signed so that both the standardwebhooks package and the openai SDK's webhooks.unwrap verify it; a
// receiver that fails twice gets it on the third try, with an API process and the delivering worker
// both restarted between tries; a host outside WEBHOOK_ALLOWED_HOSTS gets no request at all.
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import OpenAI from "openai";
import { Webhook } from "standardwebhooks";
import request from "supertest";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { freePort } from "../helpers/redis-server.ts";
import { serveWithWorker, ServiceProcess, waitFor } from "../helpers/worker-harness.ts";

interface Received {
  headers: Record<string, string>;
  body: string;
}

/** A local receiver answering `statuses` in turn (then 200), keeping every request. */
async function receiver(statuses: number[]): Promise<{ url: string; host: string; requests: Received[]; close(): Promise<void> }> {
  const requests: Received[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      requests.push({ headers: req.headers as Record<string, string>, body });
      res.writeHead(statuses[requests.length - 1] ?? 200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `http://${host}/hooks`, host, requests, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe("webhooks", () => {
  let api: TestApi;
  let worker: ServiceProcess;
  let flaky: Awaited<ReturnType<typeof receiver>>;
  let forbidden: Awaited<ReturnType<typeof receiver>>;
  let workerEnv: Record<string, string>;
  let datasetId: string;
  const post = (path: string) => request(api.app.server).post(path).set("authorization", api.keys.a);
  const cancelledJob = async () => {
    const job = await post("/v1/jobs").send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(201);
    await post(`/v1/jobs/${job.body.id}/cancel`).expect(200);
    return job.body.id as string;
  };

  before(async () => {
    flaky = await receiver([500, 503]);
    forbidden = await receiver([]);
    const env = { WEBHOOK_ALLOWED_HOSTS: flaky.host, WEBHOOK_RETRY_BASE_MS: "1500", WEBHOOK_POLL_INTERVAL_MS: "100", WEBHOOK_TIMEOUT_MS: "2000" };
    api = await startTestApi("webhooks", env);
    ({ worker } = await serveWithWorker(api, env));
    workerEnv = { DATABASE_URL: api.db.url, REDIS_URL: api.config.redisUrl, QUEUE_PREFIX: String(api.queue.opts.prefix), DATA_DIR: api.config.dataDir, MODELS_DIR: api.modelsDir, ...env };
    datasetId = (await post("/v1/datasets").attach("file", jsonl(classificationRecords(6)), "d.jsonl").expect(201)).body.id;
  });
  after(async () => {
    await worker.stop();
    await api.close();
    await flaky.close();
    await forbidden.close();
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
});
