// Queue health for the dashboard: BullMQ's counts per queue (waiting, active, failed, ...) and
// the caller's own jobs by status. Any API key may read it: the queue counts are aggregate
// numbers with no job ids or tenants, the same ones /metrics already publishes without a key;
// the job counts are the caller's tenant only.
import type { FastifyPluginAsync } from "fastify";
import { AppError } from "../../common/errors.ts";
import { JOB_STATUSES } from "../../common/job-status.ts";
import { withRedisTimeout } from "../../common/queue.ts";
import type { AppDeps } from "../deps.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses } from "../schemas.ts";

export const QUEUE_STATES = ["waiting", "prioritized", "active", "delayed", "failed", "completed"] as const;

const countsOf = (names: readonly string[]) => ({
  type: "object",
  required: [...names],
  properties: Object.fromEntries(names.map((name) => [name, { type: "integer" }])),
});

const queuesResponse = {
  type: "object",
  required: ["queues", "jobs"],
  properties: {
    queues: {
      type: "array",
      items: { type: "object", required: ["name", "counts"], properties: { name: { type: "string" }, counts: countsOf(QUEUE_STATES) } },
    },
    jobs: { ...countsOf(JOB_STATUSES), description: "this tenant's jobs by status" },
  },
} as const;

export type QueueRoutesOptions = Pick<AppDeps, "prisma" | "queue">;

export const queueRoutes: FastifyPluginAsync<QueueRoutesOptions> = async (app, { prisma, queue }) => {
  app.get(
    "/v1/queues",
    {
      schema: {
        tags: ["health"],
        summary: "Jobs per queue state (all tenants, counts only) and this tenant's jobs by status",
        response: { 200: queuesResponse, ...errorResponses(401, 429, 503) },
      },
    },
    async (request) => {
      const counts = await withRedisTimeout(queue.getJobCounts(...QUEUE_STATES), 1000, "the queue counts").catch((error: Error) => {
        throw new AppError(503, "queue_unavailable", `the queue counts are unavailable: ${error.message}`);
      });
      const groups = await prisma.job.groupBy({ by: ["status"], where: { tenantId: tenantOf(request) }, _count: { _all: true } });
      return {
        queues: [{ name: queue.name, counts: Object.fromEntries(QUEUE_STATES.map((state) => [state, counts[state] ?? 0])) }],
        jobs: Object.fromEntries(JOB_STATUSES.map((status) => [status, groups.find((group) => group.status === status)?._count._all ?? 0])),
      };
    },
  );
};
