// Bearer API keys. Registered in the /v1 scope only (fastify-plugin: its hook and the request's
// `principal` belong to that scope, not to one of its own); health, metrics and docs stay open.
// The key is resolved and the request counted against its rate limit in one Redis round trip
// (ApiKeyResolver.admit); the verdict is left on the request for rate-limit.ts to apply.
import type { FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { ApiKeyResolver, Principal } from "../../common/auth.ts";
import type { LimitVerdict } from "../../common/rate-limiter.ts";
import { AppError } from "../../common/errors.ts";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal;
    /** This request's count against its key's limit; undefined while Redis cannot count. */
    rateLimit: LimitVerdict | undefined;
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

export function tenantOf(request: FastifyRequest): string {
  return request.principal.tenantId;
}

/** The key of an `Authorization: Bearer <key>` header, or the 401 a missing or malformed header gets. */
export function bearerKey(header: string | undefined): string | AppError {
  if (!header) return new AppError(401, "unauthorized", "missing Authorization: Bearer <api key>");
  const match = BEARER.exec(header);
  return match ? match[1] : new AppError(401, "unauthorized", "the Authorization header must be Bearer <api key>");
}

export const unknownKeyError = () => new AppError(401, "unauthorized", "unknown or revoked API key");

export interface ApiKeyAuthOptions {
  resolver: ApiKeyResolver;
}

export const apiKeyAuth = fp<ApiKeyAuthOptions>(async (app, { resolver }) => {
  app.decorateRequest("principal", null as unknown as Principal);
  app.decorateRequest("rateLimit", undefined);
  app.addHook("onRequest", (request, _reply, done) => {
    const key = bearerKey(request.headers.authorization);
    if (key instanceof AppError) return done(key);
    resolver.admit(key).then(({ principal, verdict }) => {
      if (!principal) return done(unknownKeyError());
      request.principal = principal;
      request.rateLimit = verdict;
      done();
    }, done);
  });
}, { name: "api-key-auth" });
