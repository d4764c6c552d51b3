// Prometheus metrics on /metrics: request durations by route, and, read at scrape time,
// queue depth by BullMQ state and jobs by database status. A registry per app, so
// several apps in one process (tests) never collide. Not encapsulated (fastify-plugin): its
// onResponse hook must see every route.
import fp from "fastify-plugin";
import { collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { withRedisTimeout } from "../../common/queue.ts";
import type { AppDeps } from "../deps.ts";
import { JOB_STATUSES } from "../../common/job-status.ts";

const QUEUE_STATES = ["waiting", "prioritized", "active", "delayed", "completed", "failed"] as const;

export type MetricsOptions = Pick<AppDeps, "prisma" | "queue">;

export const metricsPlugin = fp<MetricsOptions>(async (app, deps) => {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const durations = new Histogram({
    name: "http_request_duration_seconds",
    help: "HTTP request durations by method, route and status",
    labelNames: ["method", "route", "status"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [registry],
  });
  // Gauges read their values in collect(), at scrape time; nothing else refers to them.
  new Gauge({
    name: "lora_queue_jobs",
    help: "BullMQ jobs in the fine-tune queue by state (absent while Redis is down)",
    labelNames: ["state"],
    registers: [registry],
    async collect() {
      this.reset();
      const counts = await withRedisTimeout(deps.queue.getJobCounts(...QUEUE_STATES), 1000, "the queue counts").catch(() => undefined);
      if (!counts) return;
      for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
    },
  });
  new Gauge({
    name: "lora_jobs",
    help: "fine-tune jobs in the database by status (absent while Postgres is down)",
    labelNames: ["status"],
    registers: [registry],
    async collect() {
      this.reset();
      const groups = await deps.prisma.job.groupBy({ by: ["status"], _count: { _all: true } }).catch(() => undefined);
      if (!groups) return;
      for (const status of JOB_STATUSES) this.set({ status }, groups.find((group) => group.status === status)?._count._all ?? 0);
    },
  });

  // Resolving a labelled child hashes its labels; each (method, route, status) is resolved once.
  const children = new Map<string, ReturnType<typeof durations.labels>>();
  app.addHook("onResponse", (request, reply, done) => {
    const route = request.routeOptions.url ?? "unmatched";
    const key = `${request.method} ${route} ${reply.statusCode}`;
    let child = children.get(key);
    if (!child) {
      child = durations.labels(request.method, route, String(reply.statusCode));
      children.set(key, child);
    }
    child.observe(reply.elapsedTime / 1000);
    done();
  });

  app.get(
    "/metrics",
    { schema: { tags: ["health"], summary: "Prometheus metrics", response: { 200: { type: "string" } } } },
    async (_request, reply) => {
      reply.type(registry.contentType);
      return registry.metrics();
    },
  );
}, { name: "metrics" });
