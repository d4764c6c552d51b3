// Per-tenant webhook endpoints and their deliveries. A job's outcome (succeeded, failed, cancelled),
// and for endpoints that opt in its progress, is written to a Postgres outbox in the same transaction
// as its event, and workers deliver it signed per Standard Webhooks, retrying with backoff; a delivery
// can be sent again on request. Only hosts in WEBHOOK_ALLOWED_HOSTS may be endpoints (SSRF guard).
import type { FastifyInstance } from "fastify";
import type { Config } from "../../common/config.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError, notFound } from "../../common/errors.ts";
import type { WebhookDelivery, WebhookEndpoint } from "../../common/generated/prisma/client.ts";
import { DEFAULT_WEBHOOK_EVENTS, newWebhookSecret, WEBHOOK_EVENT_TYPES, webhookUrlRefusal } from "../../common/webhooks.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, uuidParams } from "../schemas.ts";

const endpointSchema = {
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    url: { type: "string" },
    events: { type: "array", items: { type: "string" } },
    secret: { type: "string", description: "only in the answer to POST: sign-checking key (whsec_...)" },
    createdAt: { type: "string", format: "date-time" },
  },
} as const;

const deliverySchema = {
  type: "object",
  properties: {
    id: { type: "string", format: "uuid" },
    eventId: { type: "string" },
    eventType: { type: "string" },
    status: { type: "string", enum: ["pending", "delivered", "failed"] },
    attempts: { type: "integer" },
    nextAttemptAt: { type: "string", format: "date-time" },
    lastStatus: { type: ["integer", "null"] },
    lastError: { type: ["string", "null"] },
    lastResponse: { type: ["string", "null"], description: "the first KB of the receiver's last answer" },
    queuedAt: { type: "string", format: "date-time", description: "when it was queued (again, after a redelivery); retries stop WEBHOOK_RETRY_WINDOW_MS later" },
    createdAt: { type: "string", format: "date-time" },
    deliveredAt: { type: ["string", "null"], format: "date-time" },
  },
} as const;

const endpointView = ({ secret: _secret, tenantId: _tenant, ...endpoint }: WebhookEndpoint) => endpoint;
const deliveryView = ({ payload: _payload, lockedUntil: _lock, endpointId: _endpoint, ...delivery }: WebhookDelivery) => delivery;

export async function webhookRoutes(app: FastifyInstance, deps: { prisma: PrismaClient; config: Config }): Promise<void> {
  const { prisma, config } = deps;
  const endpointOf = async (id: string, tenantId: string) => {
    const endpoint = await prisma.webhookEndpoint.findFirst({ where: { id, tenantId } });
    if (!endpoint) throw notFound("webhook", id);
    return endpoint;
  };

  app.post(
    "/v1/webhooks",
    {
      schema: {
        tags: ["webhooks"],
        summary: "Add a webhook endpoint; the answer holds its signing secret, shown once",
        body: {
          type: "object",
          additionalProperties: false,
          required: ["url"],
          properties: {
            url: { type: "string", minLength: 1, maxLength: 2000 },
            events: {
              type: "array",
              items: { type: "string", enum: [...WEBHOOK_EVENT_TYPES] },
              minItems: 1,
              uniqueItems: true,
              default: [...DEFAULT_WEBHOOK_EVENTS],
              description: "what to receive; job.progress (opt-in) at most once a minute per job",
            },
          },
        },
        response: { 201: endpointSchema, ...errorResponses(400, 401, 429) },
      },
    },
    async (request, reply) => {
      const { url, events } = request.body as { url: string; events: string[] };
      const refusal = webhookUrlRefusal(url, config.webhookAllowedHosts);
      if (refusal) throw new AppError(400, "webhook_host_not_allowed", `the webhook URL ${refusal}`, [{ path: "body.url", message: refusal }]);
      const endpoint = await prisma.webhookEndpoint.create({ data: { tenantId: tenantOf(request), url, events, secret: newWebhookSecret() } });
      return reply.code(201).send({ ...endpointView(endpoint), secret: endpoint.secret });
    },
  );

  app.get(
    "/v1/webhooks",
    { schema: { tags: ["webhooks"], summary: "The tenant's webhook endpoints", response: { 200: { type: "object", properties: { data: { type: "array", items: endpointSchema } } }, ...errorResponses(401, 429) } } },
    async (request) => ({ data: (await prisma.webhookEndpoint.findMany({ where: { tenantId: tenantOf(request) }, orderBy: { createdAt: "asc" } })).map(endpointView) }),
  );

  app.delete(
    "/v1/webhooks/:id",
    { schema: { tags: ["webhooks"], summary: "Remove a webhook endpoint and its pending deliveries", params: uuidParams, response: { 204: { type: "null" }, ...errorResponses(400, 401, 404, 429) } } },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      await endpointOf(id, tenantOf(request));
      await prisma.webhookEndpoint.delete({ where: { id } });
      return reply.code(204).send();
    },
  );

  app.get(
    "/v1/webhooks/:id/deliveries",
    {
      schema: {
        tags: ["webhooks"],
        summary: "The endpoint's newest 100 deliveries: status, attempts, last answer",
        params: uuidParams,
        response: { 200: { type: "object", properties: { data: { type: "array", items: deliverySchema } } }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      await endpointOf(id, tenantOf(request));
      const rows = await prisma.webhookDelivery.findMany({ where: { endpointId: id }, orderBy: { createdAt: "desc" }, take: 100 });
      return { data: rows.map(deliveryView) };
    },
  );

  app.post(
    "/v1/webhooks/:id/deliveries/:deliveryId/redeliver",
    {
      schema: {
        tags: ["webhooks"],
        summary: "Send a delivery again: the same event and webhook-id, queued now with a fresh retry window",
        params: {
          type: "object",
          required: ["id", "deliveryId"],
          properties: { id: uuidParams.properties.id, deliveryId: uuidParams.properties.id },
        },
        response: { 202: deliverySchema, ...errorResponses(400, 401, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      const { id, deliveryId } = request.params as { id: string; deliveryId: string };
      await endpointOf(id, tenantOf(request));
      // Not while a worker is sending it: its outcome would overwrite the new queue entry.
      const now = new Date();
      const requeued = await prisma.webhookDelivery.updateMany({
        where: { id: deliveryId, endpointId: id, OR: [{ lockedUntil: null }, { lockedUntil: { lt: now } }] },
        data: { status: "pending", attempts: 0, nextAttemptAt: now, queuedAt: now, lockedUntil: null, deliveredAt: null },
      });
      if (requeued.count === 0) {
        if (!(await prisma.webhookDelivery.findFirst({ where: { id: deliveryId, endpointId: id }, select: { id: true } }))) throw notFound("delivery", deliveryId);
        throw new AppError(409, "delivery_in_progress", "a worker is sending this delivery right now; ask again once it has an outcome");
      }
      return reply.code(202).send(deliveryView(await prisma.webhookDelivery.findUniqueOrThrow({ where: { id: deliveryId } })));
    },
  );
}
