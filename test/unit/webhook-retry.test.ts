// Webhook retry timing: exponential backoff with jitter, capped, and no retry past the delivery's window.
import assert from "node:assert/strict";
import { test } from "node:test";
import { MAX_RETRY_DELAY_MS, nextAttemptAt } from "../../services/worker/webhooks.ts";

const settings = { webhookRetryBaseMs: 5000, webhookRetryWindowMs: 24 * 3_600_000 };
const queuedAt = new Date("2026-12-03T00:00:00Z");

test("the delay doubles after each failed try, half of it random", () => {
  const now = new Date(queuedAt.getTime() + 60_000);
  const delay = (attempts: number, random: number) => nextAttemptAt(attempts, queuedAt, now, settings, () => random)!.getTime() - now.getTime();
  assert.deepEqual([1, 2, 3, 4].map((attempts) => delay(attempts, 0)), [2500, 5000, 10_000, 20_000]);
  assert.deepEqual([1, 2, 3, 4].map((attempts) => delay(attempts, 1)), [5000, 10_000, 20_000, 40_000]);
  const spread = new Set(Array.from({ length: 20 }, () => nextAttemptAt(3, queuedAt, now, settings)!.getTime()));
  assert.ok(spread.size > 1, "jittered");
});

test("the delay stops growing at an hour", () => {
  const now = new Date(queuedAt.getTime() + 60_000);
  const at = nextAttemptAt(30, queuedAt, now, settings, () => 1)!;
  assert.equal(at.getTime() - now.getTime(), MAX_RETRY_DELAY_MS);
});

test("a delivery is given up once the next try would fall more than 24 hours after it was queued", () => {
  const late = new Date(queuedAt.getTime() + 24 * 3_600_000 - 1000);
  assert.equal(nextAttemptAt(1, queuedAt, late, settings, () => 0), undefined);
  assert.ok(nextAttemptAt(1, queuedAt, new Date(queuedAt.getTime() + 23 * 3_600_000), settings, () => 1));
  // Tried on this schedule, a delivery failing every time gets tried for the whole day, then stops.
  let now = queuedAt;
  let attempts = 0;
  for (;;) {
    attempts += 1;
    const next = nextAttemptAt(attempts, queuedAt, now, settings, () => 0.5);
    if (!next) break;
    now = next;
  }
  assert.ok(now.getTime() - queuedAt.getTime() > 23 * 3_600_000, `last try ${(now.getTime() - queuedAt.getTime()) / 3_600_000} h after queueing`);
  assert.ok(attempts > 20 && attempts < 50, `${attempts} tries`);
});
