// The OpenAI-compatible surface (/v1/files, /v1/fine_tuning/jobs) as one plugin, registered in the
// authenticated /v1 scope beside our own API: same keys, tables and queue; OpenAI's object and
// error shapes, so the official SDKs work with baseURL pointed here. Mapping: services/api/README.md.
import type { FastifyInstance } from "fastify";
import type { Queue } from "bullmq";
import type { ArtifactStore } from "../../common/artifacts.ts";
import type { Config } from "../../common/config.ts";
import type { PrismaClient } from "../../common/db.ts";
import type { ModelRegistry } from "../../common/models.ts";
import type { FineTunePayload } from "../../common/queue.ts";
import type { DataQualityPreflight } from "../data-quality.ts";
import { useOpenAiErrors } from "./errors.ts";
import { openAiFileRoutes } from "./files.ts";
import { openAiJobRoutes } from "./jobs.ts";

export interface OpenAiCompatOptions {
  prisma: PrismaClient;
  queue: Queue<FineTunePayload>;
  store: ArtifactStore;
  config: Config;
  models: ModelRegistry;
  preflight: DataQualityPreflight;
}

export async function openAiCompat(app: FastifyInstance, options: OpenAiCompatOptions): Promise<void> {
  useOpenAiErrors(app);
  // Only the files routes take uploads; multipart's hooks would otherwise run on every request.
  await app.register(openAiFileRoutes, options);
  await app.register(openAiJobRoutes, options);
}
