// Bearer API keys. Registered in the /v1 scope only (fastify-plugin: its hook and the request's
// `principal` belong to that scope, not to one of its own); health, metrics and docs stay open.
import type { FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import type { ApiKeyResolver, Principal } from "../../common/auth.ts";
import { AppError } from "../../common/errors.ts";

declare module "fastify" {
  interface FastifyRequest {
    principal: Principal;
  }
}

const BEARER = /^Bearer\s+(\S+)\s*$/i;

export function tenantOf(request: FastifyRequest): string {
  return request.principal.tenantId;
}

export interface ApiKeyAuthOptions {
  resolver: ApiKeyResolver;
}

export const apiKeyAuth = fp<ApiKeyAuthOptions>(async (app, { resolver }) => {
  app.decorateRequest("principal", null as unknown as Principal);
  // Callback style, not async: a key seen within the cache TTL then costs no promise at all.
  app.addHook("onRequest", (request, _reply, done) => {
    const header = request.headers.authorization;
    if (!header) return done(new AppError(401, "unauthorized", "missing Authorization: Bearer <api key>"));
    const match = BEARER.exec(header);
    if (!match) return done(new AppError(401, "unauthorized", "the Authorization header must be Bearer <api key>"));
    const cached = resolver.cached(match[1]);
    if (cached) {
      request.principal = cached;
      return done();
    }
    resolver.resolve(match[1]).then((principal) => {
      if (!principal) return done(new AppError(401, "unauthorized", "unknown or revoked API key"));
      request.principal = principal;
      done();
    }, done);
  });
}, { name: "api-key-auth" });
