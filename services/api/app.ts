// Builds the Fastify application from its dependencies; server.ts listens, tests use it
// through supertest. Each route file is a plugin that owns its schemas.
import { randomUUID } from "node:crypto";
import type { Queue } from "bullmq";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Config } from "../common/config.ts";
import type { PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import type { FineTunePayload } from "../common/queue.ts";
import type { BackendInfo } from "../trainer/backend.ts";
import { errorsPlugin } from "./plugins/errors.ts";
import { healthRoutes } from "./routes/health.ts";

export interface AppDeps {
  config: Config;
  logger: Logger;
  prisma: PrismaClient;
  redis: Redis;
  queue: Queue<FineTunePayload>;
  store: ArtifactStore;
  /** The engine backend of this process, once chosen. */
  backend: () => BackendInfo | undefined;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config.maxJsonBodyBytes,
    requestIdHeader: "x-request-id",
    genReqId: () => randomUUID(),
    disableRequestLogging: false,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: true } },
  });
  app.addHook("onSend", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });
  await app.register(errorsPlugin);
  await app.register(async (scope) => healthRoutes(scope, deps));
  return app;
}
