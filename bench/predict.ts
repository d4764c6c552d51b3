// Prediction latency of POST /v1/adapters/:id/predict on the tiny DistilBERT fixture.
// Builds its own world (a throwaway database, two adapters trained by the engine on one
// base model, the API listening on a free port) and measures over HTTP:
//   - the first request (base model load), the first request of a second adapter (swap,
//     no reload), then closed-loop load: C clients each sending one request after another
//     for D seconds, with 1 or 16 inputs per request, alternating the two adapters.
// Usage: npm run bench:predict [-- --seconds 5 --clients 1,8]
// With --peer it measures inference throughput against PyTorch instead (bench/inference.ts).
import { randomUUID } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { packAdapterFolder } from "../services/common/adapter-archive.ts";
import { buildApp } from "../services/api/app.ts";
import { FsArtifactStore } from "../services/common/artifacts.ts";
import { createApiKey } from "../services/common/auth.ts";
import { loadConfig } from "../services/common/config.ts";
import { createLogger } from "../services/common/logger.ts";
import { createFineTuneQueue, createRedis } from "../services/common/queue.ts";
import { initBackend, train } from "../services/trainer/index.ts";
import { engineFixtures, fixtureModel } from "../test/helpers/engine-fixtures.ts";
import { createTestDatabase, TEST_REDIS_URL, testQueuePrefix } from "../test/helpers/services.ts";
import { runInferenceBench } from "./inference.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "5" },
    clients: { type: "string", default: "1,8" },
    peer: { type: "boolean", default: false },
    backends: { type: "string", default: "wasm-blas" },
    rounds: { type: "string", default: "1" },
    repeats: { type: "string", default: "3" },
    "new-tokens": { type: "string", default: "64" },
    child: { type: "string" },
    task: { type: "string" },
  },
});
const seconds = Number(values.seconds);
const clientCounts = values.clients.split(",").map(Number);

const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

async function main(): Promise<void> {
  const fixtures = await engineFixtures();
  const environment = loadConfig();
  const backend = await initBackend(environment.trainerBackend, { blasAddonPath: environment.trainerBlasAddon });
  const root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-bench-predict-"));
  const modelsDir = path.join(root, "models");
  await fs.cp(fixtureModel("distilbert-cls"), path.join(modelsDir, "tiny-distilbert"), { recursive: true });
  const db = await createTestDatabase("bench_predict");
  const config = loadConfig({ DATABASE_URL: db.url, LOG_LEVEL: "silent", MODELS_DIR: modelsDir, DATA_DIR: path.join(root, "data"), RATE_LIMIT_PER_MINUTE: "10000000", TRAINER_BACKEND: backend.name });
  const store = new FsArtifactStore(config.dataDir);
  const redis = createRedis(TEST_REDIS_URL);
  redis.on("error", () => {});
  const queue = createFineTuneQueue(redis, testQueuePrefix("bench"));
  const app = await buildApp({ config, logger: createLogger("silent", "bench"), prisma: db.prisma, outages: db.outages, redis, queue, store, backend: () => backend });
  try {
    const { key } = await createApiKey(db.prisma, "bench", "bench");
    const tenant = await db.prisma.tenant.findUniqueOrThrow({ where: { name: "bench" } });
    const baseModel = await db.prisma.baseModel.create({
      data: { id: "tiny-distilbert", path: path.join(modelsDir, "tiny-distilbert"), architecture: "DistilBertForSequenceClassification", modelType: "distilbert", tasks: ["classification"], config: {} },
    });
    const dataset = await db.prisma.dataset.create({
      data: { tenantId: tenant.id, name: "bench", format: "classification", rows: 192, sizeBytes: 1n, sha256: "bench", storageKey: "bench", stats: {} },
    });
    const adapterIds: string[] = [];
    for (const seed of [1, 2]) {
      const adapterId = randomUUID();
      const storageKey = `adapters/${adapterId}`;
      await train({
        modelDir: baseModel.path,
        trainFile: path.join(fixtures, "sentiment-train.jsonl"),
        outDir: store.pathOf(storageKey),
        lora: { r: 8, alpha: 16, dropout: 0 },
        hyper: { epochs: 1, batchSize: 16, learningRate: 0.005, warmupRatio: 0, weightDecay: 0, maxSeqLength: 32, seed },
      });
      const packed = await packAdapterFolder(store, storageKey);
      const job = await db.prisma.job.create({
        data: { tenantId: tenant.id, status: "succeeded", task: "classification", baseModelId: baseModel.id, trainDatasetId: dataset.id, loraConfig: {}, hyperparameters: {} },
      });
      await db.prisma.adapter.create({
        data: {
          id: adapterId, tenantId: tenant.id, jobId: job.id, baseModelId: baseModel.id, task: "classification", rank: 8, alpha: 16, targetModules: ["q_lin", "v_lin"],
          files: packed.files as unknown as object, sizeBytes: BigInt(packed.sizeBytes), sha256: packed.sha256, storageKey, metrics: {},
        },
      });
      adapterIds.push(adapterId);
    }

    await app.listen({ host: "127.0.0.1", port: 0 });
    const { port } = app.server.address() as { port: number };
    const texts = (await fs.readFile(path.join(fixtures, "sentiment-validation.jsonl"), "utf8"))
      .split("\n")
      .filter(Boolean)
      .map((line) => (JSON.parse(line) as { text: string }).text);
    let request = 0;
    const predict = async (adapterId: string, inputs: number): Promise<number> => {
      const body = JSON.stringify({ inputs: Array.from({ length: inputs }, (_, index) => texts[(request + index) % texts.length]) });
      request += 1;
      const started = performance.now();
      const response = await fetch(`http://127.0.0.1:${port}/v1/adapters/${adapterId}/predict`, {
        method: "POST",
        headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
        body,
      });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`predict answered ${response.status}`);
      return performance.now() - started;
    };

    console.log(`backend ${backend.name}; tiny DistilBERT (2 layers, d 32); ${os.cpus().length} CPUs`);
    console.log(`first request, base model load + adapter A: ${(await predict(adapterIds[0], 1)).toFixed(1)} ms`);
    console.log(`first request of adapter B on the loaded base: ${(await predict(adapterIds[1], 1)).toFixed(1)} ms`);
    for (let warm = 0; warm < 20; warm++) await predict(adapterIds[warm % 2], 16);

    console.log("\nclients  inputs/request  requests/s  inputs/s    p50 ms   p90 ms   p99 ms");
    for (const inputs of [1, 16]) {
      for (const clients of clientCounts) {
        const latencies: number[] = [];
        const deadline = performance.now() + seconds * 1000;
        await Promise.all(
          Array.from({ length: clients }, async (_, client) => {
            for (let turn = client; performance.now() < deadline; turn++) latencies.push(await predict(adapterIds[turn % 2], inputs));
          }),
        );
        latencies.sort((a, b) => a - b);
        const rate = latencies.length / seconds;
        console.log(
          `${String(clients).padStart(7)}  ${String(inputs).padStart(14)}  ${rate.toFixed(1).padStart(10)}  ${(rate * inputs).toFixed(0).padStart(8)}  ` +
            `${percentile(latencies, 50).toFixed(1).padStart(8)} ${percentile(latencies, 90).toFixed(1).padStart(8)} ${percentile(latencies, 99).toFixed(1).padStart(8)}`,
        );
      }
    }
  } finally {
    await app.close();
    await queue.close();
    redis.disconnect();
    await db.drop();
    await fs.rm(root, { recursive: true, force: true });
  }
}

if (values.peer) {
  await runInferenceBench({
    backends: values.backends.split(","), rounds: Number(values.rounds), repeats: Number(values.repeats), newTokens: Number(values["new-tokens"]), child: values.child, task: values.task,
  });
} else {
  await main();
}
