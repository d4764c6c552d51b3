// Request limits per API key counted in Redis, so that every API replica enforces one shared
// limit rather than each its own. A fixed window: one Lua script per request (one round trip)
// increments the key's counter, starts its expiry on the window's first request and, when asked,
// also returns an entry of the shared API-key cache (auth.ts), so that authenticating and
// counting a request together cost one Redis round trip even when this process lacks the key.
//
// Redis down or slow: the request is let through (fail open) and a line is logged once per
// outage. Limits protect capacity, not access (keys are checked against Postgres either way),
// and failing closed would turn a Redis outage into a full API outage, while the API otherwise
// keeps answering reads and job status without Redis.
import type { Redis } from "ioredis";
import type { Logger } from "./logger.ts";
import { withRedisTimeout } from "./queue.ts";

const HIT = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
local cached = false
if KEYS[2] then cached = redis.call('GET', KEYS[2]) end
return {count, ttl, cached}`;

export interface LimitVerdict {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export class RedisRateLimiter {
  private failing = false;

  constructor(
    private readonly redis: Redis,
    /** Namespaces the counters (the queue prefix), so deployments sharing a Redis do not share limits. */
    private readonly prefix: string,
    readonly limit: number,
    private readonly windowMs: number,
    private readonly logger: Logger,
    private readonly timeoutMs = 250,
  ) {}

  /**
   * Counts one request of `id` and, given `cacheKey`, reads that Redis key in the same script.
   * Undefined when Redis could not count it (the request goes through).
   */
  async hit(id: string, cacheKey?: string): Promise<(LimitVerdict & { cached?: string }) | undefined> {
    try {
      const keys = [`${this.prefix}:ratelimit:${id}`, ...(cacheKey ? [cacheKey] : [])];
      const [count, ttl, cached] = await withRedisTimeout(
        this.redis.eval(HIT, keys.length, ...keys, this.windowMs) as Promise<[number, number, string | null]>,
        this.timeoutMs,
        "the rate limit",
      );
      if (this.failing) this.logger.info("rate limits are counted in Redis again");
      this.failing = false;
      const verdict = { allowed: count <= this.limit, limit: this.limit, remaining: Math.max(0, this.limit - count), resetMs: ttl };
      return cached ? { ...verdict, cached } : verdict;
    } catch (error) {
      if (!this.failing) {
        this.logger.warn({ err: (error as Error).message }, "redis cannot count requests; rate limits are not enforced until it answers (fail open)");
      }
      this.failing = true;
      return undefined;
    }
  }
}
