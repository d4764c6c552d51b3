// Builds the Fastify application from its dependencies; server.ts listens, tests use it
// through supertest. Each route file is a plugin that owns its schemas.
import { randomUUID } from "node:crypto";
import multipart from "@fastify/multipart";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import type { Queue } from "bullmq";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import type { ArtifactStore } from "../common/artifacts.ts";
import { ApiKeyResolver, ensureBootstrapKey } from "../common/auth.ts";
import type { Config } from "../common/config.ts";
import { CANONICAL_UUID, type OutageLog, type PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import { ModelRegistry } from "../common/models.ts";
import type { FineTunePayload } from "../common/queue.ts";
import type { BackendInfo } from "../trainer/backend.ts";
import { JobSql } from "./job-sql.ts";
import { AdapterTargets } from "./adapter-targets.ts";
import { requireApiKey } from "./plugins/auth.ts";
import { errorsPlugin } from "./plugins/errors.ts";
import { metricsPlugin } from "./plugins/metrics.ts";
import { limitRequestsPerKey } from "./plugins/rate-limit.ts";
import { adapterRoutes } from "./routes/adapters.ts";
import { datasetRoutes } from "./routes/datasets.ts";
import { healthRoutes } from "./routes/health.ts";
import { jobRoutes } from "./routes/jobs.ts";
import { modelRoutes } from "./routes/models.ts";
import { generateRoutes } from "./routes/generate.ts";
import { predictRoutes } from "./routes/predict.ts";
import { registerSharedSchemas } from "./schemas.ts";

/**
 * The response headers OWASP's REST Security Cheat Sheet asks of a JSON API. Responses here
 * are JSON or files, never pages: nothing may load from them or frame them. Helmet's
 * other defaults (x-xss-protection, x-download-options, x-dns-prefetch-control, ...) only
 * concern HTML documents in old browsers. /docs replaces the policy with swagger-ui's own.
 */
const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "cross-origin-resource-policy": "same-site",
  "strict-transport-security": "max-age=31536000; includeSubDomains",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
} as const;

export interface AppDeps {
  config: Config;
  logger: Logger;
  prisma: PrismaClient;
  /** Shared by every Postgres pool of the process, so an outage is logged once. */
  outages: OutageLog;
  redis: Redis;
  queue: Queue<FineTunePayload>;
  store: ArtifactStore;
  /** The engine backend of this process, once chosen. */
  backend: () => BackendInfo | undefined;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config } = deps;
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: config.maxJsonBodyBytes,
    requestIdHeader: "x-request-id",
    genReqId: () => randomUUID(),
    ajv: {
      customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: true, allErrors: true },
      // ajv-formats' uuid also takes "urn:uuid:…", which Postgres rejects: only the canonical form passes.
      onCreate: (ajv) => ajv.addFormat("uuid", CANONICAL_UUID),
    },
  });
  // One synchronous hook for the request id and the security headers: on the job-status path,
  // helmet's middleware chain and an async onSend hook cost more than the route itself.
  app.addHook("onRequest", (request, reply, done) => {
    reply.headers(SECURITY_HEADERS);
    reply.header("x-request-id", request.id);
    done();
  });
  await app.register(errorsPlugin);
  registerSharedSchemas(app);
  await app.register(swagger, {
    openapi: {
      info: { title: "LoRA fine-tuning service", version: "1.0.0", description: "Upload datasets, run LoRA fine-tune jobs, download PEFT adapters." },
      components: { securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "an API key (see the keys CLI)" } } },
      security: [{ bearer: [] }],
    },
  });
  // Not encapsulated: its onResponse hook must see every route.
  await metricsPlugin(app, deps);
  await app.register(async (scope) => healthRoutes(scope, deps));

  const models = new ModelRegistry(deps.prisma, config.modelsDir, deps.logger);
  const resolver = new ApiKeyResolver(deps.prisma, config.authCacheTtlMs);
  const jobSql = new JobSql(config.databaseUrl, deps.outages);
  app.addHook("onClose", async () => jobSql.close());
  await app.register(async (v1) => {
    requireApiKey(v1, resolver);
    limitRequestsPerKey(v1, config.rateLimitPerMinute);
    // Only the dataset routes take uploads; multipart's hooks would otherwise run on every /v1 request.
    await v1.register(async (uploads) => {
      await uploads.register(multipart);
      await datasetRoutes(uploads, deps);
    });
    await modelRoutes(v1, { models });
    await jobRoutes(v1, { ...deps, models, jobSql });
    await adapterRoutes(v1, deps);
    const adapterTargets = new AdapterTargets(deps.prisma, deps.store);
    await predictRoutes(v1, { ...deps, adapterTargets });
    await generateRoutes(v1, { ...deps, adapterTargets });
  });

  await app.register(swaggerUi, { routePrefix: "/docs", staticCSP: true });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());

  if (config.bootstrapApiKey) {
    // The API still starts with Postgres down; the key then works from the next start.
    await ensureBootstrapKey(deps.prisma, config.bootstrapApiKey).catch((error: Error) =>
      deps.logger.error({ err: error.message }, "could not install BOOTSTRAP_API_KEY"),
    );
  }
  return app;
}
