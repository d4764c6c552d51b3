// What the API is built from: the connections and settings server.ts (or a test) creates, and that
// buildApp hands to each route plugin as its options. A module of its own so that route files
// depend on it, never on app.ts, which depends on them.
import type { Queue } from "bullmq";
import type { Redis } from "ioredis";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Config } from "../common/config.ts";
import type { OutageLog, PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import type { FineTunePayload } from "../common/queue.ts";
import type { BackendInfo } from "../trainer/index.ts";

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
