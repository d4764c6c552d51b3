// A fixed one-minute window of requests per API key, counted in this process (with several API
// replicas each enforces the limit alone). Synchronous on purpose: it runs on every /v1 request.
// Registered in the /v1 scope after api-key-auth (fastify-plugin, so the hook joins that scope).
import fp from "fastify-plugin";
import { AppError } from "../../common/errors.ts";

const WINDOW_MS = 60_000;
const PRUNE_ABOVE_KEYS = 10_000;

interface Window {
  startedAt: number;
  count: number;
}

export interface RateLimitOptions {
  maxPerMinute: number;
}

export const rateLimitPerKey = fp<RateLimitOptions>(async (app, { maxPerMinute }) => {
  const windows = new Map<string, Window>();

  // onRequest, right after the key is resolved: requests that fail parsing or validation count too,
  // and a limited client's body is never read.
  app.addHook("onRequest", (request, reply, done) => {
    const now = Date.now();
    const key = request.principal.keyId;
    let window = windows.get(key);
    if (!window || now - window.startedAt >= WINDOW_MS) {
      if (!window && windows.size >= PRUNE_ABOVE_KEYS) {
        for (const [staleKey, stale] of windows) if (now - stale.startedAt >= WINDOW_MS) windows.delete(staleKey);
      }
      window = { startedAt: now, count: 0 };
      windows.set(key, window);
    }
    window.count += 1;
    const resetSeconds = Math.ceil((window.startedAt + WINDOW_MS - now) / 1000);
    reply.header("x-ratelimit-limit", maxPerMinute);
    reply.header("x-ratelimit-remaining", Math.max(0, maxPerMinute - window.count));
    reply.header("x-ratelimit-reset", resetSeconds);
    if (window.count <= maxPerMinute) return done();
    reply.header("retry-after", resetSeconds);
    done(new AppError(429, "rate_limited", `rate limit of ${maxPerMinute} requests a minute exceeded; retry in ${resetSeconds} s`));
  });
}, { name: "rate-limit-per-key", dependencies: ["api-key-auth"] });
