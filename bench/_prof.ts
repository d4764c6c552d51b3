import os from "node:os"; import path from "node:path"; import fs from "node:fs/promises";
import { buildApp } from "../services/api/app.ts";
import { ArtifactStore } from "../services/common/artifacts.ts";
import { createApiKey } from "../services/common/auth.ts";
import { loadConfig } from "../services/common/config.ts";
import { createLogger } from "../services/common/logger.ts";
import { createFineTuneQueue, createRedis } from "../services/common/queue.ts";
import { writeModels } from "../test/helpers/api.ts";
import { createTestDatabase, TEST_REDIS_URL, testQueuePrefix } from "../test/helpers/services.ts";
const db = await createTestDatabase("prof");
const root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-prof-"));
await writeModels(path.join(root, "models"));
const config = loadConfig({ DATABASE_URL: db.url, LOG_LEVEL: "silent", MODELS_DIR: path.join(root, "models"), DATA_DIR: path.join(root, "data"), RATE_LIMIT_PER_MINUTE: "10000000" });
const redis = createRedis(TEST_REDIS_URL);
const queue = createFineTuneQueue(redis, testQueuePrefix("prof"));
const app = await buildApp({ config, logger: createLogger("silent", "b"), prisma: db.prisma, redis, queue, store: new ArtifactStore(config.dataDir), backend: () => undefined });
await app.ready();
const { key } = await createApiKey(db.prisma, "t", "k");
const authorization = `Bearer ${key}`;
const id = "00000000-0000-4000-8000-000000000000";
for (const url of [`/v1/jobs/${id}`, "/v1/models", "/healthz"]) {
  for (let r = 0; r < 2; r++) {
    const t = performance.now();
    await Promise.all(Array.from({ length: 500 }, () => app.inject({ url, headers: { authorization } })));
    if (r) console.log(url, "per s", Math.round(500000 / (performance.now() - t)));
  }
}
await app.close(); await queue.close(); redis.disconnect(); await db.drop();
