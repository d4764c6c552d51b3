// A fixed one-minute window of requests per API key, counted in Redis so that the limit holds
// across every API replica (services/common/rate-limiter.ts). The count is taken by api-key-auth
// in the same Redis round trip that resolves the key; this hook applies the verdict. While Redis
// cannot count, requests go through (fail open) and the limiter logs it once per outage.
// Registered in the /v1 scope after api-key-auth (fastify-plugin, so the hook joins that scope).
import type { FastifyReply } from "fastify";
import fp from "fastify-plugin";
import { AppError } from "../../common/errors.ts";
import type { LimitVerdict } from "../../common/rate-limiter.ts";

export const rateLimitPerKey = fp(async (app) => {
  // onRequest, right after the key is resolved: requests that fail parsing or validation count too,
  // and a limited client's body is never read.
  app.addHook("onRequest", (request, reply, done) => done(applyRateLimit(reply, request.rateLimit)));
}, { name: "rate-limit-per-key", dependencies: ["api-key-auth"] });

/** Sets a counted request's rate-limit headers; the 429 to answer when it is over the limit. */
export function applyRateLimit(reply: FastifyReply, verdict: LimitVerdict | undefined): AppError | undefined {
  if (!verdict) return undefined;
  const resetSeconds = Math.max(1, Math.ceil(verdict.resetMs / 1000));
  reply.header("x-ratelimit-limit", verdict.limit);
  reply.header("x-ratelimit-remaining", verdict.remaining);
  reply.header("x-ratelimit-reset", resetSeconds);
  if (verdict.allowed) return undefined;
  reply.header("retry-after", resetSeconds);
  return new AppError(429, "rate_limited", `rate limit of ${verdict.limit} requests a minute exceeded; retry in ${resetSeconds} s`);
}
