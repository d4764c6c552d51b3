// The dashboard's server side: /ui serves its files and uPlot with a Content-Security-Policy of
// its own, POST /ui/session checks a key for the sign-in page, every other route keeps the API's,
// and GET /v1/queues reports queue and job counts
// (queue-wide counts, the caller's tenant's jobs) or 503 while Redis is down.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { UI_CONTENT_SECURITY_POLICY } from "../../services/api/routes/ui.ts";
import { enqueueFineTune } from "../../services/common/queue.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { waitFor } from "../helpers/worker-harness.ts";

const API_POLICY = "default-src 'none'; frame-ancestors 'none'";
const UI_ROOT = path.resolve(import.meta.dirname, "../../services/api/ui");

describe("dashboard files, CSP and queue counts", () => {
  let api: TestApi;
  let redisServer: PrivateRedis;

  before(async () => {
    redisServer = new PrivateRedis(await freePort());
    await redisServer.start();
    api = await startTestApi("ui_routes", {}, redisServer.url);
  });

  after(async () => {
    // Only a test that failed mid-outage leaves Redis stopped.
    if (api.redis.status !== "ready") await redisServer.start().catch(() => {});
    await api.close();
    await redisServer.stop();
  });

  it("serves the page, its modules and uPlot under the dashboard's CSP", async () => {
    const redirect = await request(api.app.server).get("/ui");
    assert.equal(redirect.status, 301);
    assert.equal(redirect.headers.location, "/ui/");

    const page = await request(api.app.server).get("/ui/");
    assert.equal(page.status, 200);
    assert.match(page.headers["content-type"], /^text\/html/);
    assert.match(page.text, /<script type="module" src="js\/main.js">/);
    assert.equal(page.headers["content-security-policy"], UI_CONTENT_SECURITY_POLICY);
    // Relaxed for scripts, styles and API calls from this origin only; nothing inline, no framing.
    assert.doesNotMatch(UI_CONTENT_SECURITY_POLICY, /unsafe-inline|unsafe-eval|\*|https?:/);
    assert.equal(page.headers["x-frame-options"], "DENY");
    assert.equal(page.headers["x-content-type-options"], "nosniff");

    for (const name of await fs.readdir(path.join(UI_ROOT, "js"))) {
      const module = await request(api.app.server).get(`/ui/js/${name}`);
      assert.equal(module.status, 200, name);
      assert.match(module.headers["content-type"], /^text\/javascript/, name);
      assert.equal(module.text, await fs.readFile(path.join(UI_ROOT, "js", name), "utf8"));
    }
    const uplot = await request(api.app.server).get("/ui/vendor/uPlot.esm.js");
    assert.equal(uplot.status, 200);
    assert.match(uplot.text, /export \{ uPlot as default \}/);
    assert.equal((await request(api.app.server).get("/ui/vendor/uPlot.min.css")).status, 200);
  });

  it("serves only its own files: anything else is a 404 under the dashboard's CSP", async () => {
    for (const url of ["/ui/nothing.js", "/ui/../package.json", "/ui/%2e%2e/%2e%2e/package.json", "/ui/js/../../routes/ui.ts"]) {
      const response = await request(api.app.server).get(url);
      assert.equal(response.status, 404, url);
      assert.ok(!response.text.includes("lora-service"), url);
    }
  });

  it("checks a key at POST /ui/session as the API does: 200 with valid true or false and the reason", async () => {
    const check = (headers: Record<string, string>, url = "/ui/session") => request(api.app.server).post(url).set(headers);
    const valid = await check({ authorization: api.keys.a });
    assert.equal(valid.status, 200, valid.text);
    assert.deepEqual(valid.body, { valid: true });
    assert.equal(valid.headers["content-security-policy"], UI_CONTENT_SECURITY_POLICY);
    // Counted against the key's rate limit like any /v1 request.
    const again = await check({ authorization: api.keys.a });
    assert.equal(Number(again.headers["x-ratelimit-remaining"]), Number(valid.headers["x-ratelimit-remaining"]) - 1);

    const wrong = await check({ authorization: "Bearer not-a-key-of-this-service" });
    assert.equal(wrong.status, 200, wrong.text);
    assert.deepEqual(wrong.body, { valid: false, error: { code: "unauthorized", message: "unknown or revoked API key" } });
    assert.equal(wrong.headers["content-security-policy"], UI_CONTENT_SECURITY_POLICY);
    // The same answer /v1 gives that key, as a 401.
    const v1 = await request(api.app.server).get("/v1/jobs").set("authorization", "Bearer not-a-key-of-this-service");
    assert.deepEqual([v1.status, v1.body.error.code, v1.body.error.message], [401, wrong.body.error.code, wrong.body.error.message]);

    const none = await check({});
    assert.deepEqual(none.body, { valid: false, error: { code: "unauthorized", message: "missing Authorization: Bearer <api key>" } });
    const malformed = await check({ authorization: api.keys.a.replace(/^Bearer /, "") });
    assert.deepEqual(malformed.body, { valid: false, error: { code: "unauthorized", message: "the Authorization header must be Bearer <api key>" } });
    // Only the header counts: a key in the URL is not read.
    const inUrl = await check({}, `/ui/session?key=${encodeURIComponent(api.keys.a.replace(/^Bearer /, ""))}`);
    assert.equal(inUrl.body.valid, false);
  });

  it("leaves every other route's CSP unchanged", async () => {
    for (const [url, headers] of [
      ["/healthz", {}],
      ["/openapi.json", {}],
      ["/metrics", {}],
      ["/v1/jobs", { authorization: api.keys.a }],
      ["/v1/jobs", {}],
      ["/v1/queues", { authorization: api.keys.a }],
      ["/nowhere", {}],
    ] as const) {
      const response = await request(api.app.server).get(url).set(headers);
      assert.equal(response.headers["content-security-policy"], API_POLICY, `${url} → ${response.status}`);
      assert.equal(response.headers["x-frame-options"], "DENY", url);
    }
  });

  it("counts queue states for any key and jobs for the caller's tenant only", async () => {
    assert.equal((await request(api.app.server).get("/v1/queues")).status, 401);
    const tenant = await api.db.prisma.tenant.findFirstOrThrow({ where: { name: "tenant-a" } });
    await api.db.prisma.baseModel.upsert({
      where: { id: "tiny-distilbert" },
      create: { id: "tiny-distilbert", path: "tiny-distilbert", architecture: "DistilBertForSequenceClassification", modelType: "distilbert", tasks: ["classification"], config: {} },
      update: {},
    });
    const dataset = await api.db.prisma.dataset.create({
      data: { tenantId: tenant.id, name: "d.jsonl", format: "classification", rows: 1, sizeBytes: 1n, sha256: "0".repeat(64), storageKey: "datasets/d", stats: {} },
    });
    for (const status of ["queued", "queued", "failed"] as const) {
      const job = await api.db.prisma.job.create({
        data: { tenantId: tenant.id, task: "classification", baseModelId: "tiny-distilbert", trainDatasetId: dataset.id, loraConfig: {}, hyperparameters: {}, status },
      });
      if (status === "queued") await enqueueFineTune(api.queue, job, 2000);
    }

    const a = await request(api.app.server).get("/v1/queues").set("authorization", api.keys.a);
    assert.equal(a.status, 200, a.text);
    assert.equal(a.body.queues.length, 1);
    assert.equal(a.body.queues[0].name, api.queue.name);
    assert.equal(a.body.queues[0].counts.waiting + a.body.queues[0].counts.prioritized, 2);
    assert.equal(a.body.queues[0].counts.failed, 0);
    assert.deepEqual({ queued: a.body.jobs.queued, failed: a.body.jobs.failed, running: a.body.jobs.running }, { queued: 2, failed: 1, running: 0 });

    const b = await request(api.app.server).get("/v1/queues").set("authorization", api.keys.b);
    assert.equal(b.status, 200);
    assert.equal(b.body.queues[0].counts.waiting + b.body.queues[0].counts.prioritized, 2, "queue counts are queue-wide");
    assert.equal(b.body.jobs.queued, 0, "job counts are the caller's tenant's only");
  });

  it("answers 503 queue_unavailable while Redis is down", async () => {
    await redisServer.stop();
    const response = await request(api.app.server).get("/v1/queues").set("authorization", api.keys.a);
    assert.equal(response.status, 503, response.text);
    assert.equal(response.body.error.code, "queue_unavailable");
    assert.deepEqual(api.serverErrors.splice(0), ["GET /v1/queues → 503"]);
    await redisServer.start();
    await waitFor(async () => api.redis.status === "ready", 10_000, "the API's Redis connection to come back");
    const again = await request(api.app.server).get("/v1/queues").set("authorization", api.keys.a);
    assert.equal(again.status, 200, again.text);
  });
});
