// Delivers the webhook outbox (WebhookDelivery rows, filled by a trigger on JobEvent): every poll a
// worker claims due rows with FOR UPDATE SKIP LOCKED, so several workers never send one row at once,
// re-checks the SSRF guard (a refused host gets no request at all), POSTs the signed event without
// following redirects, and records the outcome: delivered, retried with exponential backoff, or failed.
import type { Config } from "../common/config.ts";
import { isDatabaseUnavailable, type PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import { signWebhook, webhookUrlRefusal } from "../common/webhooks.ts";

const BATCH = 20;

interface Claimed {
  id: string;
  eventId: string;
  payload: unknown;
  attempts: number;
  url: string;
  secret: string;
}

export type WebhookSettings = Pick<Config, "webhookAllowedHosts" | "webhookMaxAttempts" | "webhookRetryBaseMs" | "webhookPollIntervalMs" | "webhookTimeoutMs">;

export class WebhookDispatcher {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly prisma: PrismaClient,
    private readonly settings: WebhookSettings,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const loop = () => {
      if (this.stopped) return;
      this.running = this.tick()
        .catch((error: unknown) => {
          if (!isDatabaseUnavailable(error)) this.logger.warn({ err: error }, "webhook delivery round failed");
        })
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(loop, this.settings.webhookPollIntervalMs);
        });
    };
    loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One round: claims the due deliveries and sends them; resolves when each has its outcome written. */
  async tick(): Promise<number> {
    // Held for a send's timeout plus slack: a worker that dies mid-send leaves the row to another one then.
    const lockMs = this.settings.webhookTimeoutMs + 5000;
    const claimed = await this.prisma.$queryRawUnsafe<Claimed[]>(
      `UPDATE "WebhookDelivery" d SET "lockedUntil" = (now() AT TIME ZONE 'UTC') + $1::int * interval '1 millisecond'
       FROM "WebhookEndpoint" w
       WHERE d."endpointId" = w.id AND d.id IN (
         SELECT id FROM "WebhookDelivery"
         WHERE status = 'pending' AND "nextAttemptAt" <= now() AT TIME ZONE 'UTC' AND ("lockedUntil" IS NULL OR "lockedUntil" < now() AT TIME ZONE 'UTC')
         ORDER BY "nextAttemptAt" LIMIT ${BATCH} FOR UPDATE SKIP LOCKED)
       RETURNING d.id, d."eventId", d.payload, d.attempts, w.url, w.secret`,
      lockMs,
    );
    await Promise.all(claimed.map((delivery) => this.deliver(delivery)));
    return claimed.length;
  }

  private async deliver(delivery: Claimed): Promise<void> {
    const refusal = webhookUrlRefusal(delivery.url, this.settings.webhookAllowedHosts);
    if (refusal) {
      this.logger.warn({ delivery: delivery.id, url: delivery.url }, `webhook not sent: ${refusal}`);
      await this.record(delivery.id, { status: "failed", attempts: delivery.attempts, lastError: `not sent: ${refusal}`, lastStatus: null, lockedUntil: null });
      return;
    }
    const body = JSON.stringify(delivery.payload);
    const timestamp = Math.floor(Date.now() / 1000);
    let outcome: { ok: boolean; status: number | null; error: string | null };
    try {
      const response = await fetch(delivery.url, {
        method: "POST",
        redirect: "manual",
        signal: AbortSignal.timeout(this.settings.webhookTimeoutMs),
        headers: {
          "content-type": "application/json",
          "user-agent": "lora-service-webhooks",
          "webhook-id": delivery.eventId,
          "webhook-timestamp": String(timestamp),
          "webhook-signature": signWebhook(delivery.secret, delivery.eventId, timestamp, body),
        },
        body,
      });
      await response.body?.cancel();
      outcome = { ok: response.status >= 200 && response.status < 300, status: response.status, error: response.status >= 300 ? `answered ${response.status}` : null };
    } catch (error) {
      outcome = { ok: false, status: null, error: (error as Error).message };
    }
    const attempts = delivery.attempts + 1;
    if (outcome.ok) {
      await this.record(delivery.id, { status: "delivered", attempts, lastStatus: outcome.status, lastError: null, lockedUntil: null, deliveredAt: new Date() });
      return;
    }
    const final = attempts >= this.settings.webhookMaxAttempts;
    const retryInMs = this.settings.webhookRetryBaseMs * 2 ** (attempts - 1);
    this.logger.info({ delivery: delivery.id, attempts, error: outcome.error }, final ? "webhook delivery failed for good" : `webhook delivery failed; retrying in ${retryInMs} ms`);
    await this.record(delivery.id, {
      status: final ? "failed" : "pending",
      attempts,
      lastStatus: outcome.status,
      lastError: outcome.error,
      lockedUntil: null,
      nextAttemptAt: new Date(Date.now() + retryInMs),
    });
  }

  private async record(
    id: string,
    data: { status: "pending" | "delivered" | "failed"; attempts: number; lastStatus: number | null; lastError: string | null; lockedUntil: null; deliveredAt?: Date; nextAttemptAt?: Date },
  ): Promise<void> {
    await this.prisma.webhookDelivery.update({ where: { id }, data });
  }
}
