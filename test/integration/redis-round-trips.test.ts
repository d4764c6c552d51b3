// One Redis round trip per API request: the rate-limit count and the shared API-key cache read
// are one Lua script (ApiKeyResolver.admit). Proven with Redis MONITOR on a private Redis: over
// requests from an API that has never seen the keys (Redis has no entry either), then from a
// second API instance with a cold local cache (Redis has the entries), every request is one
// EVAL; the only other commands are one SET per key, off the request path, after its one
// Postgres lookup.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import request from "supertest";
import { buildApp } from "../../services/api/app.ts";
import { createApiKey } from "../../services/common/auth.ts";
import { createLogger } from "../../services/common/logger.ts";
import { createRedis } from "../../services/common/queue.ts";
import { startTestApi, type TestApi } from "../helpers/api.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { waitFor } from "../helpers/worker-harness.ts";

const KEYS = 3;
const REQUESTS_PER_KEY = 5;

describe("Redis round trips per API request", () => {
  let server: PrivateRedis;
  let api: TestApi;
  let second: FastifyInstance;
  let monitor: Redis;
  const commands: { name: string; source: string }[] = [];

  before(async () => {
    server = new PrivateRedis(await freePort());
    await server.start();
    api = await startTestApi("round_trips", { AUTH_CACHE_TTL_MS: "60000", RATE_LIMIT_PER_MINUTE: "1000" }, server.url);
    // A second replica: same Postgres and Redis, its own (cold) local key cache.
    second = await buildApp({ config: api.config, logger: createLogger("silent", "test"), prisma: api.db.prisma, outages: api.db.outages, redis: api.redis, queue: api.queue, store: api.store, backend: () => ({ name: "cpu", notes: [] }) });
    await second.ready();
    const watcher = createRedis(server.url);
    monitor = await watcher.monitor();
    watcher.disconnect();
    monitor.on("monitor", (_time: string, args: string[], source: string) => commands.push({ name: String(args[0]).toLowerCase(), source }));
  });

  after(async () => {
    monitor?.disconnect();
    await second?.close();
    await api?.close();
    await server?.stop();
  });

  async function countDuring(app: FastifyInstance, keys: string[]): Promise<Map<string, number>> {
    commands.splice(0);
    for (let round = 0; round < REQUESTS_PER_KEY; round += 1) {
      for (const key of keys) await request(app.server).get("/v1/models").set("authorization", `Bearer ${key}`).expect(200);
    }
    // MONITOR reports asynchronously: wait for every EVAL to be seen, then a little for stragglers.
    const requests = keys.length * REQUESTS_PER_KEY;
    await waitFor(async () => commands.filter((command) => command.name === "eval").length >= requests, 5000, () => JSON.stringify(commands));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const counts = new Map<string, number>();
    // Commands a Lua script runs are reported with source "lua": they are inside the one EVAL.
    for (const command of commands) if (command.source !== "lua") counts.set(command.name, (counts.get(command.name) ?? 0) + 1);
    return counts;
  }

  it("costs one EVAL per request, cold or warm, plus one SET per key after its Postgres lookup", async () => {
    const keys: string[] = [];
    for (let index = 0; index < KEYS; index += 1) keys.push((await createApiKey(api.db.prisma, "tenant-rt", `key-${index}`)).key);
    const requests = KEYS * REQUESTS_PER_KEY;

    const cold = await countDuring(api.app, keys);
    assert.deepEqual(Object.fromEntries(cold), { eval: requests, set: KEYS }, "no cache anywhere: one EVAL per request, one SET per key");

    const sharedOnly = await countDuring(second, keys);
    assert.deepEqual(Object.fromEntries(sharedOnly), { eval: requests }, "a replica without the keys: exactly one EVAL per request");

    const warm = await countDuring(api.app, keys);
    assert.deepEqual(Object.fromEntries(warm), { eval: requests }, "keys cached locally: still one EVAL (the count) per request");
  });
});
