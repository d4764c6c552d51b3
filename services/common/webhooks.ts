// Webhook plumbing shared by the API (endpoints) and the worker (deliveries): Standard Webhooks
// secrets and signatures (https://www.standardwebhooks.com, what OpenAI's webhooks.unwrap checks), and
// the SSRF guard: a webhook goes only to a host named in WEBHOOK_ALLOWED_HOSTS.
import { createHmac, randomBytes } from "node:crypto";

/** The job outcomes every endpoint receives unless it chooses otherwise (OpenAI's event names). */
export const DEFAULT_WEBHOOK_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"] as const;
/**
 * Every event an endpoint may choose. `job.progress` (ours, opt-in) carries the job's step report, at
 * most once a minute per job and endpoint (webhook_progress_interval() in migration 20261203120500).
 */
export const WEBHOOK_EVENT_TYPES = [...DEFAULT_WEBHOOK_EVENTS, "job.progress"] as const;

/** A new secret, `whsec_` and 32 random bytes in base64. */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

/** The webhook-signature header's value for a message: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`. */
export function signWebhook(secret: string, id: string, timestampSeconds: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  return `v1,${createHmac("sha256", key).update(`${id}.${timestampSeconds}.${body}`).digest("base64")}`;
}

/**
 * Why `url` may not receive webhooks, or undefined when it may: http(s) only, no credentials, and
 * its host (or host:port) listed in `allowedHosts`. An empty list allows nothing.
 */
export function webhookUrlRefusal(url: string, allowedHosts: readonly string[]): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "is not a valid URL";
  }
  if (parsed.protocol !== "https:" && parsed.protocol !== "http:") return "must be http or https";
  if (parsed.username || parsed.password) return "must not carry credentials";
  const host = parsed.hostname.toLowerCase();
  if (!allowedHosts.includes(host) && !allowedHosts.includes(parsed.host.toLowerCase())) {
    return `host ${parsed.host} is not in WEBHOOK_ALLOWED_HOSTS${allowedHosts.length === 0 ? " (empty: webhooks are off)" : ""}`;
  }
  return undefined;
}
