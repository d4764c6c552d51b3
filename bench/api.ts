// API throughput against the real stack in this process (Postgres, Redis, the full app
// with auth, rate limiting, metrics and validation), next to a bare Fastify route measured
// in the same run. The load generator runs in a worker thread so that it does not share
// the server's event loop. The read routes are measured in alternating rounds and compared
// by their medians, so that a slow spell of a shared machine does not land on one side only.
// Usage: npm run bench:api [-- --seconds 10 --connections 50 --rounds 3]
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import fs from "node:fs/promises";
import { parseArgs } from "node:util";
import Fastify from "fastify";
import { buildApp } from "../services/api/app.ts";
import { FsArtifactStore } from "../services/common/artifacts.ts";
import { createApiKey } from "../services/common/auth.ts";
import { loadConfig } from "../services/common/config.ts";
import { createLogger } from "../services/common/logger.ts";
import { createFineTuneQueue, createRedis } from "../services/common/queue.ts";
import { writeModels } from "../test/helpers/api.ts";
import { createTestDatabase, TEST_REDIS_URL, testQueuePrefix } from "../test/helpers/services.ts";

interface Histogram {
  average: number;
  p50: number;
  p99: number;
}
interface AutocannonResult {
  requests: Histogram & { total: number };
  latency: Histogram;
  non2xx: number;
  errors: number;
  duration: number;
  "2xx": number;
}
type Autocannon = (options: Record<string, unknown>) => Promise<AutocannonResult>;
const autocannon = createRequire(import.meta.url)("autocannon") as Autocannon;

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "10" }, connections: { type: "string", default: "50" }, rounds: { type: "string", default: "3" } },
});
const seconds = Number(values.seconds);
const connections = Number(values.connections);
const rounds = Number(values.rounds);

type Measurement = Awaited<ReturnType<typeof load>>;
const median = (numbers: number[]) => {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

async function load(name: string, options: Record<string, unknown>) {
  const result = await autocannon({ connections, duration: seconds, workers: 1, ...options });
  const ok = result["2xx"];
  const perSecond = ok / result.duration;
  return { name, reqPerSec: Math.round(perSecond), p50Ms: result.latency.p50, p99Ms: result.latency.p99, non2xx: result.non2xx, errors: result.errors };
}

const db = await createTestDatabase("bench");
const root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-bench-"));
await writeModels(path.join(root, "models"));
const config = loadConfig({
  ...process.env,
  DATABASE_URL: db.url,
  REDIS_URL: TEST_REDIS_URL,
  LOG_LEVEL: "silent",
  MODELS_DIR: path.join(root, "models"),
  DATA_DIR: path.join(root, "data"),
  RATE_LIMIT_PER_MINUTE: "10000000",
});
const logger = createLogger("silent", "bench");
const redis = createRedis(config.redisUrl);
const queue = createFineTuneQueue(redis, testQueuePrefix("bench"));
const app = await buildApp({ config, logger, prisma: db.prisma, outages: db.outages, redis, queue, store: new FsArtifactStore(config.dataDir), backend: () => undefined });
const bare = Fastify();
bare.get("/bare", async () => ({ status: "queued", id: "00000000-0000-4000-8000-000000000000" }));

try {
  const appUrl = await app.listen({ port: 0, host: "127.0.0.1" });
  const bareUrl = await bare.listen({ port: 0, host: "127.0.0.1" });
  const { key } = await createApiKey(db.prisma, "bench", "bench");
  const authorization = `Bearer ${key}`;
  const records = Array.from({ length: 200 }, (_, index) => JSON.stringify({ text: `bench example ${index}`, label: index % 2 ? "a" : "b" })).join("\n");
  const form = new FormData();
  form.append("file", new Blob([records]), "bench.jsonl");
  const upload = await fetch(`${appUrl}/v1/datasets`, { method: "POST", headers: { authorization }, body: form });
  const dataset = (await upload.json()) as { id: string };
  const jobBody = JSON.stringify({ baseModel: "tiny-distilbert", trainDatasetId: dataset.id, lora: { r: 8 }, metadata: { source: "bench" } });
  const submitted = await fetch(`${appUrl}/v1/jobs`, { method: "POST", headers: { authorization, "content-type": "application/json" }, body: jobBody });
  if (submitted.status !== 201) throw new Error(`setup submit answered ${submitted.status}: ${await submitted.text()}`);
  const job = (await submitted.json()) as { id: string };
  const manyJobs: string[] = [];
  for (let index = 0; index < 200; index += 1) {
    const response = await fetch(`${appUrl}/v1/jobs`, { method: "POST", headers: { authorization, "content-type": "application/json" }, body: jobBody });
    manyJobs.push(((await response.json()) as { id: string }).id);
  }

  // Warm both servers (JIT, connection pools, auth cache) before measuring.
  await autocannon({ url: `${bareUrl}/bare`, connections, duration: 2, workers: 1 });
  await autocannon({ url: `${appUrl}/v1/jobs/${job.id}`, connections, duration: 2, workers: 1, headers: { authorization } });

  const routes = {
    bare: { name: "GET /bare (bare Fastify)", options: { url: `${bareUrl}/bare` } },
    oneJob: { name: "GET /v1/jobs/:id (one job)", options: { url: `${appUrl}/v1/jobs/${job.id}`, headers: { authorization } } },
    // Each connection cycles through 200 different jobs: few concurrent requests share a query.
    manyJobs: {
      name: "GET /v1/jobs/:id (200 jobs)",
      options: { url: appUrl, headers: { authorization }, requests: manyJobs.map((id) => ({ method: "GET", path: `/v1/jobs/${id}` })) },
    },
  };
  const measured: Record<keyof typeof routes, Measurement[]> = { bare: [], oneJob: [], manyJobs: [] };
  const table: (Measurement & { round: number })[] = [];
  for (let round = 1; round <= rounds; round += 1) {
    for (const key of Object.keys(routes) as (keyof typeof routes)[]) {
      const result = await load(routes[key].name, routes[key].options);
      measured[key].push(result);
      table.push({ round, ...result });
    }
  }
  const jobsBefore = await db.prisma.job.count();
  const submitResult = await load("POST /v1/jobs", {
    url: `${appUrl}/v1/jobs`,
    method: "POST",
    headers: { authorization, "content-type": "application/json" },
    body: jobBody,
  });
  table.push({ round: 1, ...submitResult });
  const created = (await db.prisma.job.count()) - jobsBefore;
  const queued = await queue.count();

  console.log(`\nAPI benchmark: ${rounds} alternating rounds of ${seconds} s per read route, ${connections} connections, ${os.cpus().length} CPUs, Node ${process.version}\n`);
  console.table(table);
  const medianOf = (key: keyof typeof routes) => median(measured[key].map((result) => result.reqPerSec));
  const bareMedian = medianOf("bare");
  for (const key of ["oneJob", "manyJobs"] as const) {
    const ratio = medianOf(key) / bareMedian;
    const perRound = measured[key].map((result, index) => (result.reqPerSec / measured.bare[index].reqPerSec).toFixed(2)).join(", ");
    console.log(
      `${routes[key].name} / bare route: median ${Math.round(medianOf(key))} / ${Math.round(bareMedian)} req/s = ${ratio.toFixed(2)}× ` +
        `(rounds: ${perRound}) (target ≥ 0.5×) ${ratio >= 0.5 ? "PASS" : "MISS"}`,
    );
  }
  const submissionsPerSec = Math.round(created / seconds);
  console.log(`submissions: ${submissionsPerSec}/s (${created} jobs stored, ${queued} BullMQ jobs waiting; target ≥ 1000/s) ${submissionsPerSec >= 1000 ? "PASS" : "MISS"}`);
} finally {
  await app.close();
  await bare.close();
  await queue.obliterate({ force: true }).catch(() => {});
  await queue.close();
  redis.disconnect();
  await db.drop();
  await fs.rm(root, { recursive: true, force: true });
}
