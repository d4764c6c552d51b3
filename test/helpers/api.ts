// One real API per test file: its own database and queue prefix, a temporary data and
// models directory (with s3, the models are uploaded to the bucket), and tenant keys.
// Every response is watched: a 5xx fails the file.
import assert from "node:assert/strict";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Queue } from "bullmq";
import type { FastifyInstance } from "fastify";
import type { Redis } from "ioredis";
import { buildApp } from "../../services/api/app.ts";
import { FsArtifactStore, type ArtifactStore } from "../../services/common/artifacts.ts";
import { createApiKey } from "../../services/common/auth.ts";
import { loadConfig, type Config } from "../../services/common/config.ts";
import { uploadModel } from "../../services/common/model-store.ts";
import { createLogger } from "../../services/common/logger.ts";
import { createFineTuneQueue, createRedis, type FineTunePayload } from "../../services/common/queue.ts";
import type { TestS3 } from "./s3-server.ts";
import { createTestDatabase, TEST_REDIS_URL, testQueuePrefix, type TestDatabase } from "./services.ts";

export interface TestApi {
  app: FastifyInstance;
  db: TestDatabase;
  redis: Redis;
  queue: Queue<FineTunePayload>;
  store: ArtifactStore;
  config: Config;
  modelsDir: string;
  /** Bearer header values for two tenants. */
  keys: { a: string; b: string };
  /** Responses with a 5xx status seen so far (method, url, status, body). */
  serverErrors: string[];
  close(): Promise<void>;
}

/** Minimal Hugging Face folders: the API reads only config.json. */
export const TEST_MODELS: Record<string, object> = {
  "tiny-distilbert": { architectures: ["DistilBertForSequenceClassification"], model_type: "distilbert", dim: 32 },
  "tiny-gpt2": { architectures: ["GPT2LMHeadModel"], model_type: "gpt2", n_embd: 32 },
  "tiny-bert-base": { architectures: ["BertModel"], model_type: "bert" },
  "mystery-model": { architectures: ["T5ForConditionalGeneration"], model_type: "t5" },
};

export async function writeModels(modelsDir: string): Promise<void> {
  for (const [id, config] of Object.entries(TEST_MODELS)) {
    await fs.mkdir(path.join(modelsDir, id), { recursive: true });
    await fs.writeFile(path.join(modelsDir, id, "config.json"), JSON.stringify(config));
  }
  await fs.mkdir(path.join(modelsDir, "not-a-model"), { recursive: true });
}

/** With `s3`, artifacts go to its bucket and DATA_DIR is only this API's cache. */
export async function startTestApi(label: string, env: Record<string, string> = {}, redisUrl = TEST_REDIS_URL, s3?: TestS3): Promise<TestApi> {
  const db = await createTestDatabase(label);
  const root = await fs.mkdtemp(path.join(os.tmpdir(), `lora-${label}-`));
  const modelsDir = path.join(root, "models");
  await writeModels(modelsDir);
  const config = loadConfig({
    DATABASE_URL: db.url,
    REDIS_URL: redisUrl,
    LOG_LEVEL: "silent",
    MODELS_DIR: modelsDir,
    DATA_DIR: path.join(root, "data"),
    ENQUEUE_TIMEOUT_MS: "500",
    QUEUE_PREFIX: testQueuePrefix(label),
    ...s3?.env(),
    ...env,
  });
  const redis = createRedis(redisUrl);
  redis.on("error", () => {});
  const queue = createFineTuneQueue(redis, config.queuePrefix);
  queue.on("error", () => {});
  const store: ArtifactStore = s3 ? s3.store(config.dataDir) : new FsArtifactStore(config.dataDir);
  // With the s3 store the API lists base models from the bucket, not MODELS_DIR: upload them.
  if (s3) for (const id of Object.keys(TEST_MODELS)) await uploadModel(config, store, path.join(modelsDir, id));
  const app = await buildApp({ config, logger: createLogger("silent", "test"), prisma: db.prisma, outages: db.outages, redis, queue, store, backend: () => ({ name: "cpu", notes: [] }) });
  const serverErrors: string[] = [];
  app.addHook("onResponse", async (request, reply) => {
    if (reply.statusCode >= 500 && request.url !== "/readyz") serverErrors.push(`${request.method} ${request.url} → ${reply.statusCode}`);
  });
  await app.ready();
  const a = await createApiKey(db.prisma, "tenant-a", "test");
  const b = await createApiKey(db.prisma, "tenant-b", "test");
  return {
    app,
    db,
    redis,
    queue,
    store,
    config,
    modelsDir,
    keys: { a: `Bearer ${a.key}`, b: `Bearer ${b.key}` },
    serverErrors,
    async close() {
      await app.close();
      await queue.obliterate({ force: true }).catch(() => {});
      await queue.close();
      redis.disconnect();
      await db.drop();
      await fs.rm(root, { recursive: true, force: true });
      assert.deepEqual(serverErrors, [], "no request may get a 5xx");
    },
  };
}

export function jsonl(records: unknown[]): Buffer {
  return Buffer.from(records.map((record) => JSON.stringify(record)).join("\n") + "\n");
}

export const classificationRecords = (count: number) =>
  Array.from({ length: count }, (_, index) => ({ text: `example number ${index} ${"x".repeat(index % 7)}`, label: index % 3 === 0 ? "positive" : "negative" }));
