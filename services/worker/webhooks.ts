// Delivers the webhook outbox (WebhookDelivery rows, filled by a trigger on JobEvent): every poll a
// worker claims due rows with FOR UPDATE SKIP LOCKED, so several workers never send one row at once,
// re-checks the SSRF guard (a refused host gets no request at all), POSTs the signed event without
// following redirects, within WEBHOOK_TIMEOUT_MS, and records the outcome with the first KB of the
// answer: delivered, retried with exponential backoff and jitter, or failed once WEBHOOK_RETRY_WINDOW_MS
// has passed since it was queued.
import type { Config } from "../common/config.ts";
import { isDatabaseUnavailable, type PrismaClient } from "../common/db.ts";
import type { Logger } from "../common/logger.ts";
import { signWebhook, webhookUrlRefusal } from "../common/webhooks.ts";

const BATCH = 20;
/** How much of a receiver's answer is kept, to show in the deliveries listing. */
export const RESPONSE_BYTES_KEPT = 1024;
/** Backoff stops doubling here, so a long outage is still tried every hour or so. */
export const MAX_RETRY_DELAY_MS = 3_600_000;

interface Claimed {
  id: string;
  eventId: string;
  payload: unknown;
  attempts: number;
  queuedAt: Date;
  url: string;
  secret: string;
}

export type WebhookSettings = Pick<Config, "webhookAllowedHosts" | "webhookRetryWindowMs" | "webhookRetryBaseMs" | "webhookPollIntervalMs" | "webhookTimeoutMs">;

/**
 * When a delivery that has failed `attempts` times is tried next, or undefined when that would be
 * past its retry window (it is then `failed`). Exponential backoff with "equal jitter": half the
 * delay is fixed, half random, so receivers coming back from an outage are not hit all at once.
 */
export function nextAttemptAt(attempts: number, queuedAt: Date, now: Date, settings: Pick<WebhookSettings, "webhookRetryBaseMs" | "webhookRetryWindowMs">, random = Math.random): Date | undefined {
  const delay = Math.min(settings.webhookRetryBaseMs * 2 ** (attempts - 1), MAX_RETRY_DELAY_MS);
  const at = now.getTime() + delay / 2 + random() * (delay / 2);
  return at > queuedAt.getTime() + settings.webhookRetryWindowMs ? undefined : new Date(at);
}

/** The first RESPONSE_BYTES_KEPT bytes of a body as text; the rest is not read. */
async function responseStart(response: Response): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < RESPONSE_BYTES_KEPT) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
  // A multi-byte character cut at the limit decodes as U+FFFD.
  return Buffer.concat(chunks).subarray(0, RESPONSE_BYTES_KEPT).toString("utf8");
}

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
       RETURNING d.id, d."eventId", d.payload, d.attempts, d."queuedAt", w.url, w.secret`,
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
    let outcome: { ok: boolean; status: number | null; error: string | null; response: string | null };
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
      const text = await responseStart(response);
      outcome = { ok: response.status >= 200 && response.status < 300, status: response.status, error: response.status >= 300 ? `answered ${response.status}` : null, response: text };
    } catch (error) {
      outcome = { ok: false, status: null, error: (error as Error).message, response: null };
    }
    const attempts = delivery.attempts + 1;
    if (outcome.ok) {
      await this.record(delivery.id, { status: "delivered", attempts, lastStatus: outcome.status, lastError: null, lastResponse: outcome.response, lockedUntil: null, deliveredAt: new Date() });
      return;
    }
    const now = new Date();
    const next = nextAttemptAt(attempts, new Date(delivery.queuedAt), now, this.settings);
    this.logger.info(
      { delivery: delivery.id, attempts, error: outcome.error },
      next ? `webhook delivery failed; retrying in ${next.getTime() - now.getTime()} ms` : "webhook delivery failed for good: its retry window has passed",
    );
    await this.record(delivery.id, {
      status: next ? "pending" : "failed",
      attempts,
      lastStatus: outcome.status,
      lastError: outcome.error,
      lastResponse: outcome.response,
      lockedUntil: null,
      ...(next ? { nextAttemptAt: next } : {}),
    });
  }

  private async record(
    id: string,
    data: {
      status: "pending" | "delivered" | "failed";
      attempts: number;
      lastStatus: number | null;
      lastError: string | null;
      lastResponse?: string | null;
      lockedUntil: null;
      deliveredAt?: Date;
      nextAttemptAt?: Date;
    },
  ): Promise<void> {
    await this.prisma.webhookDelivery.update({ where: { id }, data });
  }
}
