// Liveness and readiness. Readiness names each dependency, so an operator sees at once
// whether Postgres, Redis or the artifact store is the one down; it recovers when the dependency does.
import type { FastifyPluginAsync } from "fastify";
import { pingDatabase } from "../../common/db.ts";
import { pingRedis } from "../../common/queue.ts";
import type { AppDeps } from "../deps.ts";

const checkSchema = {
  type: "object",
  properties: { ok: { type: "boolean" }, error: { type: "string" } },
} as const;

const readySchema = {
  type: "object",
  properties: {
    status: { type: "string", enum: ["ready", "unavailable"] },
    checks: { type: "object", properties: { postgres: checkSchema, redis: checkSchema, artifacts: checkSchema } },
    backend: { type: "string" },
    error: { $ref: "ErrorResponse#/properties/error" },
  },
} as const;

async function check(probe: () => Promise<void>): Promise<{ ok: boolean; error?: string }> {
  try {
    await probe();
    return { ok: true };
  } catch (error) {
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
}

export type HealthRoutesOptions = Pick<AppDeps, "prisma" | "redis" | "store" | "backend">;

export const healthRoutes: FastifyPluginAsync<HealthRoutesOptions> = async (app, deps) => {
  app.get(
    "/healthz",
    { schema: { tags: ["health"], response: { 200: { type: "object", properties: { status: { type: "string" } } } } } },
    async () => ({ status: "ok" }),
  );

  app.get("/readyz", { schema: { tags: ["health"], response: { 200: readySchema, 503: readySchema } } }, async (_request, reply) => {
    const [postgres, redis, artifacts] = await Promise.all([
      check(() => pingDatabase(deps.prisma)),
      check(() => pingRedis(deps.redis)),
      check(() => deps.store.ping()),
    ]);
    const backend = deps.backend()?.name ?? "initialising";
    const failed = [postgres.ok ? undefined : "postgres", redis.ok ? undefined : "redis", artifacts.ok ? undefined : "artifacts"].filter(Boolean);
    if (failed.length === 0) return { status: "ready", checks: { postgres, redis, artifacts }, backend };
    return reply.code(503).send({
      status: "unavailable",
      checks: { postgres, redis, artifacts },
      backend,
      error: { code: "dependency_unavailable", message: `unavailable: ${failed.join(", ")}`, details: [] },
    });
  });
};
