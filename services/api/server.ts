// The API process: validated config, connections, the Fastify app, graceful shutdown.
import { openArtifactStore } from "../common/artifact-store.ts";
import { loadConfigOrExit } from "../common/config.ts";
import { createPrisma, OutageLog } from "../common/db.ts";
import { createLogger } from "../common/logger.ts";
import { createFineTuneQueue, createRedis } from "../common/queue.ts";
import { onShutdownSignal } from "../common/shutdown.ts";
import { initBackend, type BackendInfo } from "../trainer/index.ts";
import { buildApp } from "./app.ts";

const config = loadConfigOrExit();
const logger = createLogger(config.logLevel, "api");
const outages = new OutageLog(logger);
const prisma = createPrisma(config.databaseUrl, outages);
const redis = createRedis(config.redisUrl);
redis.on("error", (error) => logger.warn({ err: error.message }, "redis connection error"));
const queue = createFineTuneQueue(redis, config.queuePrefix);
queue.on("error", (error) => logger.warn({ err: error.message }, "queue connection error"));
let backend: BackendInfo | undefined;
initBackend(config.trainerBackend, { log: logger, blasAddonPath: config.trainerBlasAddon }).then(
  (info) => (backend = info),
  (error) => logger.error({ err: error }, "no tensorflow.js backend could be initialised"),
);

const app = await buildApp({ config, logger, prisma, outages, redis, queue, store: openArtifactStore(config), backend: () => backend });
await app.listen({ host: config.host, port: config.port });

onShutdownSignal(logger, config.shutdownTimeoutMs, async () => {
  // close() stops accepting connections and waits for in-flight requests.
  await app.close();
  await queue.close();
  redis.disconnect();
  await prisma.$disconnect();
});
