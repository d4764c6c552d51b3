import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ConfigError } from "../../services/common/config.ts";
import { loadWorkerSettings } from "../../services/worker/settings.ts";

describe("worker settings", () => {
  it("defaults the stall check to the lock duration and names the worker", () => {
    const settings = loadWorkerSettings({ WORKER_LOCK_DURATION_MS: "4000" });
    assert.equal(settings.lockDurationMs, 4000);
    assert.equal(settings.stalledIntervalMs, 4000);
    assert.equal(settings.checkpointEverySteps, 50);
    assert.match(settings.workerId, /^.+:\d+:[0-9a-f]{6}$/);
    assert.equal(loadWorkerSettings({ WORKER_ID: "gpu-7", CHECKPOINT_EVERY_STEPS: "5" }).workerId, "gpu-7");
  });

  it("names the variable of a bad value", () => {
    assert.throws(() => loadWorkerSettings({ WORKER_STALLED_INTERVAL_MS: "0" }), (error: unknown) => error instanceof ConfigError && error.variable === "WORKER_STALLED_INTERVAL_MS");
    assert.throws(() => loadWorkerSettings({ CHECKPOINT_EVERY_STEPS: "ten" }), /CHECKPOINT_EVERY_STEPS must be an integer/);
  });
});
