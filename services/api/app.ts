// Builds the Fastify application from its dependencies (deps.ts); server.ts listens, tests use it
// through supertest. Each route file is a Fastify plugin that owns its schemas and gets only the
// dependencies it uses as typed options; this file decides what is registered where.
import { randomUUID } from "node:crypto";
import swagger from "@fastify/swagger";
import swaggerUi from "@fastify/swagger-ui";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import { ApiKeyResolver, ensureBootstrapKey } from "../common/auth.ts";
import { CANONICAL_UUID } from "../common/db.ts";
import { modelSource } from "../common/model-store.ts";
import { ModelRegistry } from "../common/models.ts";
import { RedisRateLimiter } from "../common/rate-limiter.ts";
import { AdapterTargets } from "./adapter-targets.ts";
import type { AppDeps } from "./deps.ts";
import { DataQualityPreflight } from "./data-quality.ts";
import { qualityThresholdsOf } from "./datasets/ingest.ts";
import { JobSql } from "./job-sql.ts";
import { apiKeyAuth } from "./plugins/auth.ts";
import { errorsPlugin } from "./plugins/errors.ts";
import { metricsPlugin } from "./plugins/metrics.ts";
import { rateLimitPerKey } from "./plugins/rate-limit.ts";
import { adapterRoutes } from "./routes/adapters.ts";
import { datasetRoutes } from "./routes/datasets.ts";
import { eventRoutes } from "./routes/events.ts";
import { generateRoutes } from "./routes/generate.ts";
import { healthRoutes } from "./routes/health.ts";
import { jobRoutes } from "./routes/jobs.ts";
import { jobControlRoutes } from "./routes/job-control.ts";
import { checkpointDownloadRoutes } from "./routes/checkpoint-download.ts";
import { estimateRoutes } from "./routes/estimate.ts";
import { webhookRoutes } from "./routes/webhooks.ts";
import { sweepRoutes } from "./routes/sweeps.ts";
import { composeRoutes } from "./routes/compose.ts";
import { modelRoutes } from "./routes/models.ts";
import { predictRoutes } from "./routes/predict.ts";
import { queueRoutes } from "./routes/queues.ts";
import { uiRoutes } from "./routes/ui.ts";
import { openAiCompat } from "./openai/index.ts";
import { registerSharedSchemas } from "./schemas.ts";

/**
 * The response headers OWASP's REST Security Cheat Sheet asks of a JSON API. Responses here
 * are JSON or files, never pages: nothing may load from them or frame them. Helmet's
 * other defaults (x-xss-protection, x-download-options, x-dns-prefetch-control, ...) only
 * concern HTML documents in old browsers. /docs replaces the policy with swagger-ui's own, /ui
 * with the dashboard's (routes/ui.ts).
 */
const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
  "cross-origin-resource-policy": "same-site",
  "strict-transport-security": "max-age=31536000; includeSubDomains",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
} as const;

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, prisma, queue, store } = deps;
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
  await app.register(metricsPlugin, { prisma, queue });
  await app.register(healthRoutes, { prisma, redis: deps.redis, store, backend: deps.backend });

  // Objects several route plugins share, or that must close with the app.
  const models = new ModelRegistry(prisma, modelSource(config, store), deps.logger);
  // Both shared through Redis, so that every replica sees the same keys and counts one limit.
  // One Redis round trip per request counts it and reads the shared key cache (ApiKeyResolver.admit).
  const limiter = new RedisRateLimiter(deps.redis, config.queuePrefix, config.rateLimitPerMinute, 60_000, deps.logger);
  const resolver = new ApiKeyResolver(prisma, config.authCacheTtlMs, undefined, { redis: deps.redis, prefix: config.queuePrefix, limiter });
  const jobSql = new JobSql(config.databaseUrl, deps.outages);
  app.addHook("onClose", async () => jobSql.close());
  const adapterTargets = new AdapterTargets(prisma, store);
  const preflight = new DataQualityPreflight(store, qualityThresholdsOf(config), deps.logger);

  // Everything under /v1 needs an API key, and counts against that key's rate limit.
  await app.register(async (v1) => {
    await v1.register(apiKeyAuth, { resolver });
    await v1.register(rateLimitPerKey);
    await v1.register(datasetRoutes, { prisma, store, config, preflight });
    await v1.register(modelRoutes, { models });
    await v1.register(jobRoutes, { prisma, queue, config, models, jobSql, preflight });
    await v1.register(jobControlRoutes, { prisma, queue, config });
    await v1.register(sweepRoutes, { prisma, queue, config, models, jobSql, preflight });
    await v1.register(checkpointDownloadRoutes, { prisma, store });
    await v1.register(estimateRoutes, { prisma, config, models });
    await v1.register(webhookRoutes, { prisma, config });
    await v1.register(eventRoutes, { prisma, config });
    await v1.register(adapterRoutes, { prisma, store, config });
    await v1.register(composeRoutes, { prisma, queue, config });
    await v1.register(predictRoutes, { store, config, adapterTargets });
    await v1.register(generateRoutes, { store, config, adapterTargets });
    await v1.register(queueRoutes, { prisma, queue });
    // OpenAI's files and fine-tuning routes over the same tables and queue (openai/README.md).
    await v1.register(openAiCompat, { prisma, queue, store, config, models, preflight });
  });

  await app.register(swaggerUi, { routePrefix: "/docs", staticCSP: true });
  app.get("/openapi.json", { schema: { hide: true } }, async () => app.swagger());
  // The dashboard: static files, no key needed to load them; it checks a key with the /v1 resolver
  // (POST /ui/session) and then calls /v1 like any client.
  await app.register(uiRoutes, { resolver });

  if (config.bootstrapApiKey) {
    // The API still starts with Postgres down; the key then works from the next start.
    await ensureBootstrapKey(prisma, config.bootstrapApiKey).catch((error: Error) =>
      deps.logger.error({ err: error.message }, "could not install BOOTSTRAP_API_KEY"),
    );
  }
  return app;
}
