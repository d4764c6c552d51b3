// A job's event log: a JSON page after a given event id, or with
// `Accept: text/event-stream` a live stream that polls Postgres (the worker writes the
// events there), sends a comment line as heartbeat when quiet, and ends with an `end`
// event once the job is finished and every event before that has been sent.
import { setTimeout as sleep } from "node:timers/promises";
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { isDatabaseUnavailable } from "../../common/db.ts";
import { notFound } from "../../common/errors.ts";
import type { JobEvent } from "../../common/generated/prisma/client.ts";
import type { AppDeps } from "../deps.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";
import { isFinished } from "../../common/job-status.ts";

const STREAM_BATCH = 500;

const eventsQuery = {
  type: "object",
  additionalProperties: false,
  properties: {
    after: { type: "string", pattern: "^[0-9]{1,18}$", description: "return events with a larger id; default 0. Last-Event-ID does the same for streams." },
    limit: { type: "string", pattern: "^(500|[1-4][0-9]{2}|[1-9][0-9]?)$", default: "100", description: "1 to 500" },
  },
} as const;

const eventsPage = {
  type: "object",
  required: ["data", "nextAfter", "done"],
  properties: {
    data: { type: "array", items: { $ref: "JobEvent#" } },
    nextAfter: { type: "string", description: "pass as `after` for the next page" },
    done: { type: "boolean", description: "the job has finished and no events follow" },
  },
} as const;

const eventView = (event: JobEvent) => ({ ...event, id: event.id.toString() });

export type EventRoutesOptions = Pick<AppDeps, "prisma" | "config">;

export const eventRoutes: FastifyPluginAsync<EventRoutesOptions> = async (app, { prisma, config }) => {
  // Open streams end when the server shuts down, so that close() never waits on them.
  let shuttingDown = false;
  app.addHook("preClose", async () => {
    shuttingDown = true;
  });

  const eventsAfter = (jobId: string, after: bigint, take: number) =>
    prisma.jobEvent.findMany({ where: { jobId, id: { gt: after } }, orderBy: { id: "asc" }, take });
  const statusOf = async (jobId: string) => (await prisma.job.findUnique({ where: { id: jobId }, select: { status: true } }))?.status;

  async function stream(request: FastifyRequest, reply: FastifyReply, jobId: string, start: bigint): Promise<void> {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    let closed = false;
    request.raw.once("close", () => (closed = true));
    let after = start;
    let lastWrite = Date.now();
    const write = (text: string) => {
      raw.write(text);
      lastWrite = Date.now();
    };
    write(`retry: ${Math.max(1000, config.eventsPollIntervalMs)}\n\n`);
    try {
      while (!closed && !shuttingDown) {
        let status: string | undefined;
        let events: JobEvent[];
        try {
          status = await statusOf(jobId);
          events = await eventsAfter(jobId, after, STREAM_BATCH);
        } catch (error) {
          // A database outage pauses the stream; heartbeats keep it open until Postgres is back.
          if (!isDatabaseUnavailable(error)) throw error;
          await sleep(config.eventsPollIntervalMs);
          if (Date.now() - lastWrite >= config.sseHeartbeatMs) write(": heartbeat\n\n");
          continue;
        }
        for (const event of events) {
          write(`id: ${event.id}\ndata: ${JSON.stringify(eventView(event))}\n\n`);
          after = event.id;
        }
        if (events.length === STREAM_BATCH) continue;
        if (!status || isFinished(status)) {
          write(`event: end\ndata: ${JSON.stringify({ status: status ?? "deleted" })}\n\n`);
          break;
        }
        await sleep(config.eventsPollIntervalMs);
        if (Date.now() - lastWrite >= config.sseHeartbeatMs) write(": heartbeat\n\n");
      }
    } catch (error) {
      request.log.warn({ job: jobId, err: (error as Error).message }, "event stream stopped");
    } finally {
      raw.end();
    }
  }

  app.get(
    "/v1/jobs/:id/events",
    {
      schema: {
        tags: ["jobs"],
        summary: "Job events in order; a live Server-Sent Events stream with Accept: text/event-stream",
        params: uuidParams,
        querystring: eventsQuery,
        produces: ["application/json", "text/event-stream"],
        response: { 200: eventsPage, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const { after, limit: limitText } = request.query as { after?: string; limit: string };
      const limit = Number(limitText);
      const job = await prisma.job.findFirst({ where: { id, tenantId: tenantOf(request) }, select: { status: true } });
      if (!job) throw notFound("job", id);
      const lastEventId = request.headers["last-event-id"];
      const start = BigInt(after ?? (typeof lastEventId === "string" && /^[0-9]{1,18}$/.test(lastEventId) ? lastEventId : "0"));
      if ((request.headers.accept ?? "").includes("text/event-stream")) return stream(request, reply, id, start);
      const rows = await eventsAfter(id, start, limit + 1);
      const shown = rows.slice(0, limit);
      return {
        data: shown.map(eventView),
        nextAfter: (shown.length > 0 ? shown[shown.length - 1].id : start).toString(),
        done: isFinished(job.status) && rows.length <= limit,
      };
    },
  );
};
