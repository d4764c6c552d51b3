// Worker-only settings on top of the shared configuration. Lock and stall timings are
// BullMQ's; shorter values hand a crashed worker's job on sooner at the cost of more
// Redis traffic.
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { ConfigError, loadConfig, type Config } from "../common/config.ts";

export interface WorkerSettings extends Config {
  /** Names this process in Job.workerId and in logs. */
  workerId: string;
  lockDurationMs: number;
  stalledIntervalMs: number;
  checkpointEverySteps: number;
}

type Env = Record<string, string | undefined>;

function positiveInteger(env: Env, name: string, fallback: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1 || Number(raw) > max) {
    throw new ConfigError(name, `must be an integer between 1 and ${max}, got "${raw}"`);
  }
  return Number(raw);
}

export function loadWorkerSettings(env: Env = process.env): WorkerSettings {
  const lockDurationMs = positiveInteger(env, "WORKER_LOCK_DURATION_MS", 30_000, 3_600_000);
  return {
    ...loadConfig(env),
    workerId: env.WORKER_ID || `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`,
    lockDurationMs,
    stalledIntervalMs: positiveInteger(env, "WORKER_STALLED_INTERVAL_MS", lockDurationMs, 3_600_000),
    checkpointEverySteps: positiveInteger(env, "CHECKPOINT_EVERY_STEPS", 50, 1_000_000),
  };
}
