// The worker process: `npm run worker`. Several of these, on several machines, share one
// Postgres, one Redis and one artifact store (a shared DATA_DIR, or an S3 bucket and then
// each its own DATA_DIR as a local cache).
import { openArtifactStore } from "../common/artifact-store.ts";
import { ConfigError } from "../common/config.ts";
import { createPrisma, OutageLog } from "../common/db.ts";
import { createLogger } from "../common/logger.ts";
import { onShutdownSignal } from "../common/shutdown.ts";
import { FineTuneWorker } from "./fine-tune-worker.ts";
import { LocalCache } from "./local-cache.ts";
import { loadWorkerSettings, type WorkerSettings } from "./settings.ts";
import { WebhookDispatcher } from "./webhooks.ts";

let settings: WorkerSettings;
try {
  settings = loadWorkerSettings();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`configuration error: ${error.message}\n`);
  process.exit(1);
}
const logger = createLogger(settings.logLevel, "worker").child({ workerId: settings.workerId });
const outages = new OutageLog(logger);
const prisma = createPrisma(settings.databaseUrl, outages);
const store = openArtifactStore(settings);
const cache = new LocalCache(store, settings.workerCacheMaxBytes, logger);
const worker = new FineTuneWorker({ settings, logger, prisma, outages, store, cache });
// The webhook outbox is delivered by every worker; rows are claimed so that only one sends each.
const webhooks = new WebhookDispatcher(prisma, settings, logger.child({ part: "webhooks" }));
onShutdownSignal(logger, settings.shutdownTimeoutMs, async () => {
  await webhooks.stop();
  await worker.stop();
  await prisma.$disconnect();
});
await worker.start();
webhooks.start();
