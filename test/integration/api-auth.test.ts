import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import { ApiKeyResolver, createApiKey, DEFAULT_TENANT, hashApiKey, revokeApiKey } from "../../services/common/auth.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";

const run = promisify(execFile);
const repoRoot = path.resolve(import.meta.dirname, "../..");
const BOOTSTRAP = "local-bootstrap-key-0123456789";

describe("authentication, tenants and the keys CLI", () => {
  let api: TestApi;
  before(async () => {
    api = await startTestApi("auth", { BOOTSTRAP_API_KEY: BOOTSTRAP, AUTH_CACHE_TTL_MS: "0", RATE_LIMIT_PER_MINUTE: "25", MAX_JSON_BODY_BYTES: "2048" });
  });
  after(async () => api.close());

  it("needs a valid bearer key on every /v1 route", async () => {
    const routes: [string, string][] = [
      ["get", "/v1/datasets"],
      ["post", "/v1/datasets"],
      ["get", "/v1/datasets/00000000-0000-4000-8000-000000000000"],
      ["delete", "/v1/datasets/00000000-0000-4000-8000-000000000000"],
      ["get", "/v1/models"],
      ["get", "/v1/models/tiny-gpt2"],
      ["post", "/v1/jobs"],
      ["get", "/v1/jobs"],
      ["get", "/v1/jobs/00000000-0000-4000-8000-000000000000"],
      ["post", "/v1/jobs/00000000-0000-4000-8000-000000000000/cancel"],
      ["get", "/v1/jobs/00000000-0000-4000-8000-000000000000/events"],
      ["get", "/v1/jobs/00000000-0000-4000-8000-000000000000/checkpoints"],
      ["get", "/v1/adapters"],
      ["get", "/v1/adapters/00000000-0000-4000-8000-000000000000"],
      ["get", "/v1/adapters/00000000-0000-4000-8000-000000000000/download"],
      ["get", "/v1/adapters/00000000-0000-4000-8000-000000000000/files/adapter_config.json"],
    ];
    for (const [method, url] of routes) {
      const missing = await (request(api.app.server) as unknown as Record<string, (url: string) => request.Test>)[method](url).expect(401);
      assert.equal(missing.body.error.code, "unauthorized", `${method} ${url}`);
    }
    for (const header of ["Basic abc", "Bearer", "Bearer lora_not-a-real-key", "lora_x"]) {
      await request(api.app.server).get("/v1/jobs").set("authorization", header).expect(401);
    }
    await request(api.app.server).get("/v1/jobs").set("authorization", api.keys.a).expect(200);
  });

  it("stores only hashes and stops accepting a revoked key", async () => {
    const { key, info } = await createApiKey(api.db.prisma, "tenant-c", "short-lived");
    const row = await api.db.prisma.apiKey.findUniqueOrThrow({ where: { id: info.id } });
    assert.equal(row.keyHash, hashApiKey(key));
    assert.ok(!JSON.stringify(row).includes(key));
    await request(api.app.server).get("/v1/jobs").set("authorization", `Bearer ${key}`).expect(200);
    assert.equal(await revokeApiKey(api.db.prisma, info.id), 1);
    await request(api.app.server).get("/v1/jobs").set("authorization", `Bearer ${key}`).expect(401);
  });

  it("looks a key up once for concurrent requests that find it uncached", async () => {
    const { key, info } = await createApiKey(api.db.prisma, "tenant-c", "concurrent");
    // The real database, with its key lookups counted.
    let lookups = 0;
    const apiKeys = api.db.prisma.apiKey;
    const findUnique = (...args: Parameters<typeof apiKeys.findUnique>) => {
      lookups += 1;
      return apiKeys.findUnique(...args);
    };
    const countedKeys = new Proxy(apiKeys, { get: (keys, name) => (name === "findUnique" ? findUnique : Reflect.get(keys, name)) });
    const counting = new Proxy(api.db.prisma, { get: (prisma, name) => (name === "apiKey" ? countedKeys : Reflect.get(prisma, name)) });
    const resolver = new ApiKeyResolver(counting, 0);
    const principals = await Promise.all(Array.from({ length: 5 }, () => resolver.resolve(key)));
    assert.equal(lookups, 1);
    assert.ok(principals.every((principal) => principal?.keyId === info.id));
    await resolver.resolve(key);
    assert.equal(lookups, 2, "with no cache TTL the next request looks again");
  });

  it("installs BOOTSTRAP_API_KEY for the default tenant", async () => {
    await request(api.app.server).get("/v1/datasets").set("authorization", `Bearer ${BOOTSTRAP}`).expect(200);
    const row = await api.db.prisma.apiKey.findUniqueOrThrow({ where: { keyHash: hashApiKey(BOOTSTRAP) }, include: { tenant: true } });
    assert.equal(row.tenant.name, DEFAULT_TENANT);
    assert.ok(!BOOTSTRAP.startsWith(row.prefix + "x"), "only a short prefix is kept");
  });

  it("creates, lists and revokes keys from the CLI", async () => {
    const env = { ...process.env, DATABASE_URL: api.db.url, LOG_LEVEL: "silent" };
    const cli = (...args: string[]) => run("node", ["--import", "tsx", "services/api/keys-cli.ts", ...args], { cwd: repoRoot, env });
    const created = await cli("create", "--tenant", "cli-tenant", "--name", "ci");
    const key = created.stdout.trim();
    assert.match(key, /^lora_[A-Za-z0-9_-]{43}$/);
    await request(api.app.server).get("/v1/jobs").set("authorization", `Bearer ${key}`).expect(200);
    const listed = await cli("list", "--tenant", "cli-tenant");
    const [id, tenant, name, prefix, , , state] = listed.stdout.trim().split("\t");
    assert.deepEqual([tenant, name, state], ["cli-tenant", "ci", "active"]);
    assert.equal(prefix, `${key.slice(0, 12)}…`);
    assert.ok(!listed.stdout.includes(key));
    await cli("revoke", id);
    await request(api.app.server).get("/v1/jobs").set("authorization", `Bearer ${key}`).expect(401);
    await assert.rejects(cli("create"), (error: { code: number; stderr: string }) => error.code === 2 && /usage/.test(error.stderr));
  });

  it("limits each key's request rate with a 429 in the error shape", async () => {
    const { key } = await createApiKey(api.db.prisma, "tenant-a", "busy");
    const statuses: number[] = [];
    const remaining: string[] = [];
    let limited: request.Response | undefined;
    for (let index = 0; index < 26; index += 1) {
      // Every tenth request is invalid: those count against the limit too.
      const path = index % 10 === 9 ? "/v1/jobs?limit=0" : "/v1/models";
      const response = await request(api.app.server).get(path).set("authorization", `Bearer ${key}`);
      statuses.push(response.status);
      remaining.push(response.headers["x-ratelimit-remaining"]);
      if (response.status === 429) limited = response;
    }
    assert.deepEqual(remaining.slice(0, 3), ["24", "23", "22"]);
    assert.deepEqual(remaining.slice(-2), ["0", "0"]);
    assert.equal(limited!.headers["x-ratelimit-limit"], "25");
    assert.deepEqual(statuses, [...[...Array(25).keys()].map((index) => (index % 10 === 9 ? 400 : 200)), 429]);
    assert.equal(limited!.body.error.code, "rate_limited");
    assert.ok(limited!.headers["retry-after"]);
    await request(api.app.server).get("/v1/models").set("authorization", api.keys.b).expect(200);
  });

  it("sets security headers and limits JSON bodies", async () => {
    for (const path of ["/healthz", "/v1/jobs", "/v1/jobs/00000000-0000-4000-8000-000000000000"]) {
      const response = await request(api.app.server).get(path).set("authorization", api.keys.a);
      assert.equal(response.headers["content-security-policy"], "default-src 'none'; frame-ancestors 'none'", path);
      assert.equal(response.headers["x-content-type-options"], "nosniff", path);
      assert.equal(response.headers["x-frame-options"], "DENY", path);
      assert.equal(response.headers["cross-origin-resource-policy"], "same-site", path);
      assert.match(response.headers["strict-transport-security"], /^max-age=\d+/, path);
    }
    const docs = await request(api.app.server).get("/docs/").expect(200);
    assert.match(docs.text, /swagger/i);
    assert.match(docs.headers["content-security-policy"], /script-src 'self'/, "swagger-ui's own policy lets /docs run");
    const big = await request(api.app.server)
      .post("/v1/jobs")
      .set("authorization", api.keys.b)
      .send({ baseModel: "x".repeat(4096), trainDatasetId: "00000000-0000-4000-8000-000000000000" })
      .expect(413);
    assert.equal(big.body.error.code, "payload_too_large");
  });
});

describe("models, OpenAPI and metrics", () => {
  let api: TestApi;
  before(async () => {
    api = await startTestApi("platform");
  });
  after(async () => api.close());

  it("lists the Hugging Face folders in MODELS_DIR with architecture and tasks, and records them", async () => {
    const response = await request(api.app.server).get("/v1/models").set("authorization", api.keys.a).expect(200);
    const byId = Object.fromEntries(response.body.data.map((model: { id: string }) => [model.id, model]));
    assert.deepEqual(Object.keys(byId).sort(), ["mystery-model", "tiny-bert-base", "tiny-distilbert", "tiny-gpt2"]);
    assert.deepEqual(byId["tiny-distilbert"].tasks, ["classification"]);
    assert.deepEqual(byId["tiny-distilbert"].defaultTargetModules, ["q_lin", "v_lin"]);
    assert.equal(byId["tiny-gpt2"].architecture, "GPT2LMHeadModel");
    assert.deepEqual(byId["tiny-gpt2"].tasks, ["causal_lm"]);
    assert.deepEqual(byId["tiny-bert-base"].tasks, ["classification"]);
    assert.deepEqual(byId["mystery-model"].tasks, []);
    assert.equal(byId["tiny-gpt2"].path, undefined, "server paths stay private");
    const rows = await api.db.prisma.baseModel.findMany({ orderBy: { id: "asc" } });
    assert.deepEqual(rows.map((row) => row.id), ["mystery-model", "tiny-bert-base", "tiny-distilbert", "tiny-gpt2"]);
    const one = await request(api.app.server).get("/v1/models/tiny-gpt2").set("authorization", api.keys.a).expect(200);
    assert.equal(one.body.modelType, "gpt2");
    assert.equal(one.body.config.n_embd, 32);
    await request(api.app.server).get("/v1/models/not-a-model").set("authorization", api.keys.a).expect(404);
    await request(api.app.server).get("/v1/models/..%2F..%2Fetc").set("authorization", api.keys.a).expect(404);
  });

  it("publishes OpenAPI with request and response schemas for every route, and the docs page", async () => {
    const spec = (await request(api.app.server).get("/openapi.json").expect(200)).body;
    assert.equal(spec.openapi.slice(0, 2), "3.");
    const expected = [
      ["post", "/v1/datasets"],
      ["get", "/v1/datasets"],
      ["get", "/v1/datasets/{id}"],
      ["delete", "/v1/datasets/{id}"],
      ["get", "/v1/models"],
      ["get", "/v1/models/{id}"],
      ["post", "/v1/jobs"],
      ["get", "/v1/jobs"],
      ["get", "/v1/jobs/{id}"],
      ["post", "/v1/jobs/{id}/cancel"],
      ["get", "/v1/jobs/{id}/events"],
      ["get", "/v1/jobs/{id}/checkpoints"],
      ["get", "/v1/adapters"],
      ["get", "/v1/adapters/{id}"],
      ["get", "/v1/adapters/{id}/download"],
      ["get", "/v1/adapters/{id}/files/{name}"],
      ["get", "/healthz"],
      ["get", "/readyz"],
      ["get", "/metrics"],
    ];
    for (const [method, route] of expected) {
      const operation = spec.paths[route]?.[method];
      assert.ok(operation, `${method} ${route} is documented`);
      assert.ok(operation.responses["200"] ?? operation.responses["201"] ?? operation.responses["204"], `${method} ${route} has a success response`);
      if (route.startsWith("/v1/")) assert.ok(operation.responses["401"], `${method} ${route} documents 401`);
    }
    assert.ok(spec.paths["/v1/jobs"].post.requestBody.content["application/json"].schema);
    assert.ok(spec.paths["/v1/datasets"].post.requestBody.content["multipart/form-data"].schema);
    const docs = await request(api.app.server).get("/docs/").redirects(1).expect(200);
    assert.match(docs.text, /swagger/i);
  });

  it("exports request durations, queue depth by state and jobs by status", async () => {
    await request(api.app.server).get("/v1/jobs").set("authorization", api.keys.a).expect(200);
    const metrics = await request(api.app.server).get("/metrics").expect(200);
    assert.match(metrics.headers["content-type"], /text\/plain/);
    assert.match(metrics.text, /http_request_duration_seconds_count\{method="GET",route="\/v1\/jobs",status="200"\} 1/);
    assert.match(metrics.text, /lora_queue_jobs\{state="waiting"\} 0/);
    assert.match(metrics.text, /lora_jobs\{status="queued"\} 0/);
  });
});
