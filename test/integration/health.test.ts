import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import type { FastifyInstance } from "fastify";
import { Redis } from "ioredis";
import { buildApp } from "../../services/api/app.ts";
import { FsArtifactStore } from "../../services/common/artifacts.ts";
import { loadConfig } from "../../services/common/config.ts";
import { createPrisma, OutageLog } from "../../services/common/db.ts";
import { createLogger } from "../../services/common/logger.ts";
import { createFineTuneQueue, createRedis } from "../../services/common/queue.ts";
import { createTestDatabase, testQueuePrefix, type TestDatabase } from "../helpers/services.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";

async function waitFor(predicate: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await predicate()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.fail(`condition not met within ${timeoutMs} ms`);
}

describe("health and readiness", () => {
  let db: TestDatabase;
  let redisServer: PrivateRedis;
  let redis: Redis;
  let app: FastifyInstance;

  before(async () => {
    db = await createTestDatabase("health");
    redisServer = new PrivateRedis(await freePort());
    await redisServer.start();
    redis = createRedis(redisServer.url);
    redis.on("error", () => {});
    const config = loadConfig({ DATABASE_URL: db.url, REDIS_URL: redisServer.url, LOG_LEVEL: "silent" });
    app = await buildApp({
      config,
      logger: createLogger("silent", "test"),
      prisma: db.prisma,
      outages: db.outages,
      redis,
      queue: createFineTuneQueue(redis, testQueuePrefix("health")),
      store: new FsArtifactStore("/tmp/lora-test-health"),
      backend: () => ({ name: "cpu", notes: [] }),
    });
    await app.ready();
  });

  after(async () => {
    await app.close();
    redis.disconnect();
    await redisServer.stop();
    await db.drop();
  });

  it("answers /healthz without touching dependencies", async () => {
    const response = await request(app.server).get("/healthz").expect(200);
    assert.deepEqual(response.body, { status: "ok" });
    assert.ok(response.headers["x-request-id"]);
  });

  it("is ready with Postgres and Redis up and names the engine backend", async () => {
    await waitFor(async () => (await request(app.server).get("/readyz")).status === 200, 5000);
    const response = await request(app.server).get("/readyz").expect(200);
    assert.equal(response.body.status, "ready");
    assert.equal(response.body.backend, "cpu");
    assert.deepEqual(response.body.checks, { postgres: { ok: true }, redis: { ok: true }, artifacts: { ok: true } });
  });

  it("answers 503 naming Redis while Redis is down, and recovers by itself", async () => {
    await redisServer.stop();
    await waitFor(async () => (await request(app.server).get("/readyz")).status === 503, 5000);
    const down = await request(app.server).get("/readyz").expect(503);
    assert.equal(down.body.error.code, "dependency_unavailable");
    assert.match(down.body.error.message, /redis/);
    assert.equal(down.body.checks.redis.ok, false);
    assert.equal(down.body.checks.postgres.ok, true);

    await redisServer.start();
    await waitFor(async () => (await request(app.server).get("/readyz")).status === 200, 10_000);
  });

  it("keeps serving /metrics while Postgres is unreachable, without the database gauge", async () => {
    const outages = new OutageLog(createLogger("silent", "test"));
    const unreachable = createPrisma(`postgresql://postgres@127.0.0.1:${await freePort()}/nowhere`, outages);
    const offline = await buildApp({
      config: loadConfig({ DATABASE_URL: db.url, REDIS_URL: redisServer.url, LOG_LEVEL: "silent" }),
      logger: createLogger("silent", "test"),
      prisma: unreachable,
      outages,
      redis,
      queue: createFineTuneQueue(redis, testQueuePrefix("health_offline")),
      store: new FsArtifactStore("/tmp/lora-test-health"),
      backend: () => undefined,
    });
    await offline.ready();
    try {
      const metrics = await request(offline.server).get("/metrics").expect(200);
      assert.match(metrics.text, /process_cpu_seconds_total/);
      assert.match(metrics.text, /lora_queue_jobs\{state="waiting"\}/);
      assert.doesNotMatch(metrics.text, /lora_jobs\{/);
      assert.equal((await request(offline.server).get("/readyz").expect(503)).body.checks.postgres.ok, false);
    } finally {
      await offline.close();
      await unreachable.$disconnect();
    }
  });

  it("answers unknown routes with the error shape, not a stack trace", async () => {
    const response = await request(app.server).get("/nope").expect(404);
    assert.equal(response.body.error.code, "route_not_found");
  });
});
