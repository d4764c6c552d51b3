// The Redis rate limiter on its own: a fixed window counted in Redis, and, while Redis is down,
// requests let through (fail open) with one log line per outage, counting again once it returns.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { pino } from "pino";
import { createRedis } from "../../services/common/queue.ts";
import { RedisRateLimiter } from "../../services/common/rate-limiter.ts";
import { freePort, PrivateRedis } from "../helpers/redis-server.ts";
import { waitFor } from "../helpers/worker-harness.ts";

describe("Redis rate limiter", () => {
  let server: PrivateRedis;
  const lines: string[] = [];
  const logger = pino(
    { level: "info" },
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()).msg as string);
        done();
      },
    }),
  );

  before(async () => {
    server = new PrivateRedis(await freePort());
    await server.start();
  });
  after(() => server.stop());

  it("counts a fixed window, fails open with one log line while Redis is down, and counts again after", async () => {
    const redis = createRedis(server.url);
    redis.on("error", () => {});
    const limiter = new RedisRateLimiter(redis, "test-limits", 2, 60_000, logger);
    try {
      await waitFor(async () => redis.status === "ready", 10_000, "the Redis connection");
      const verdicts = [await limiter.hit("key-1"), await limiter.hit("key-1"), await limiter.hit("key-1")];
      assert.deepEqual(verdicts.map((verdict) => verdict?.allowed), [true, true, false]);
      assert.equal(verdicts[2]!.remaining, 0);
      assert.ok(verdicts[2]!.resetMs > 0 && verdicts[2]!.resetMs <= 60_000);
      assert.equal((await limiter.hit("key-2"))?.allowed, true, "each key has its own count");

      await server.stop();
      assert.equal(await limiter.hit("key-1"), undefined);
      assert.equal(await limiter.hit("key-1"), undefined);
      assert.deepEqual(lines.filter((line) => line.includes("fail open")).length, 1, lines.join("\n"));

      await server.start();
      await waitFor(async () => (await limiter.hit("key-3")) !== undefined, 10_000, `the limiter to count in Redis again\n${lines.join("\n")}`);
      assert.ok(lines.includes("rate limits are counted in Redis again"), lines.join("\n"));
    } finally {
      redis.disconnect();
    }
  });
});
