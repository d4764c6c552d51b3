// Configuration from the environment, validated once at start. A bad value stops the
// process with one line naming the variable, rather than failing later mid-request.
import path from "node:path";

/** The engine's tensorflow.js backends (services/trainer/backend.ts), "auto" picking the fastest that loads. */
export const BACKENDS = ["auto", "tensorflow", "wasm-blas", "wasm", "cpu"] as const;
export type BackendChoice = (typeof BACKENDS)[number];

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  nodeEnv: string;
  host: string;
  port: number;
  databaseUrl: string;
  redisUrl: string;
  queuePrefix: string;
  modelsDir: string;
  dataDir: string;
  logLevel: LogLevel;
  trainerBackend: BackendChoice;
  /** The OpenBLAS addon to load instead of the built one; undefined: services/trainer/native's build. */
  trainerBlasAddon: string | undefined;
  /** Classification base models a training sandbox keeps loaded across jobs. */
  modelCacheSize: number;
  maxUploadBytes: number;
  maxJsonBodyBytes: number;
  bootstrapApiKey: string | undefined;
  rateLimitPerMinute: number;
  workerConcurrency: number;
  jobMaxAttempts: number;
  jobTimeoutMs: number;
  shutdownTimeoutMs: number;
  reconcileIntervalMs: number;
  authCacheTtlMs: number;
  enqueueTimeoutMs: number;
  maxDatasetLineBytes: number;
  eventsPollIntervalMs: number;
  sseHeartbeatMs: number;
  predictModelCacheSize: number;
  predictMaxBatch: number;
  /** Where artifacts live: DATA_DIR (fs) or an S3-compatible bucket (s3), DATA_DIR then being a local cache. */
  artifactStore: "fs" | "s3";
  s3Bucket: string;
  s3Prefix: string;
  s3Endpoint: string | undefined;
  s3Region: string;
  s3ForcePathStyle: boolean;
  /** How adapter archives are downloaded from S3: streamed through the API, or a redirect to a presigned URL. */
  artifactDownload: "stream" | "redirect";
  /** Bytes of datasets a worker keeps in its local cache before evicting the least recently used. */
  workerCacheMaxBytes: number;
  /**
   * Memory one worker process may use for a job, in bytes; a submission whose planned memory exceeds it
   * is refused (422 insufficient_memory). Undefined (unset): no limit, since the API cannot see the
   * workers' machines.
   */
  workerMaxMemory: number | undefined;
  /** Training throughput POST /v1/jobs/estimate assumes for a model no worker has measured yet. */
  estimateDefaultTokensPerSecond: number;
  /** Hosts ("host" or "host:port", lower case) webhooks may be sent to; empty: none (the SSRF guard). */
  webhookAllowedHosts: string[];
  /** A delivery not delivered this long after it was queued is `failed`. */
  webhookRetryWindowMs: number;
  /** A failed delivery is tried again after about this × 2^(attempts − 1), with jitter, capped at an hour. */
  webhookRetryBaseMs: number;
  webhookPollIntervalMs: number;
  webhookTimeoutMs: number;
  /** A job refuses a validation set with more than this percentage of its examples also in the training set. */
  dataQualityMaxLeakagePercent: number;
  /** A job refuses a training set with more examples than this sharing their text with an example of another label. */
  dataQualityMaxLabelConflicts: number;
}

export class ConfigError extends Error {
  constructor(readonly variable: string, reason: string) {
    super(`${variable} ${reason}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

function text(env: Env, name: string, fallback: string): string {
  const value = env[name];
  if (value === undefined || value === "") return fallback;
  return value;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(name, `must be an integer, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function decimal(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+(\.\d+)?$/.test(raw.trim())) throw new ConfigError(name, `must be a number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function oneOf<T extends string>(env: Env, name: string, allowed: readonly T[], fallback: T): T {
  const raw = text(env, name, fallback);
  if (!(allowed as readonly string[]).includes(raw)) {
    throw new ConfigError(name, `must be one of ${allowed.join(", ")}, got "${raw}"`);
  }
  return raw as T;
}

function url(env: Env, name: string, fallback: string, protocols: string[]): string {
  const raw = text(env, name, fallback);
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `is not a valid URL: "${raw}"`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(" or ")}, got "${parsed.protocol}"`);
  }
  return raw;
}

function optionalPath(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : path.resolve(value);
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = text(env, name, String(fallback)).toLowerCase();
  if (raw === "true" || raw === "1") return true;
  if (raw === "false" || raw === "0") return false;
  throw new ConfigError(name, `must be true or false, got "${raw}"`);
}

function optionalUrl(env: Env, name: string, protocols: string[]): string | undefined {
  return env[name] ? url(env, name, "", protocols) : undefined;
}

/** Required with ARTIFACT_STORE=s3; S3's naming rules (3-63 lowercase letters, digits, dots, hyphens). */
function s3Bucket(env: Env): string {
  const bucket = text(env, "S3_BUCKET", "");
  if (bucket === "") {
    if (env.ARTIFACT_STORE === "s3") throw new ConfigError("S3_BUCKET", "is required when ARTIFACT_STORE=s3");
    return "";
  }
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError("S3_BUCKET", `is not a valid bucket name: "${bucket}"`);
  return bucket;
}

function s3Prefix(env: Env): string {
  const prefix = text(env, "S3_PREFIX", "");
  if (prefix.startsWith("/") || prefix.split("/").includes("..")) throw new ConfigError("S3_PREFIX", `must be a relative key prefix, got "${prefix}"`);
  return prefix;
}

function hostList(env: Env, name: string): string[] {
  const hosts = text(env, name, "").split(",").map((host) => host.trim().toLowerCase()).filter(Boolean);
  const bad = hosts.find((host) => !/^[a-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-f:.]+\](:\d{1,5})?$/.test(host));
  if (bad !== undefined) throw new ConfigError(name, `must be a comma-separated list of host or host:port, got "${bad}"`);
  return hosts;
}

const BYTE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** A size such as "17179869184", "16GiB" or "1.5 GB" (KiB/MiB/GiB/TiB binary, KB/MB/GB/TB decimal); unset: undefined. */
function optionalByteSize(env: Env, name: string): number | undefined {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return undefined;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(raw.trim());
  const unit = match ? BYTE_UNITS[(match[2] || "b").toLowerCase()] : undefined;
  if (!match || unit === undefined) throw new ConfigError(name, `must be a size in bytes, optionally with a unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB), got "${raw}"`);
  const bytes = Math.floor(Number(match[1]) * unit);
  if (bytes < 1) throw new ConfigError(name, `must be at least 1 byte, got "${raw}"`);
  return bytes;
}

function bootstrapKey(env: Env): string | undefined {
  const key = env.BOOTSTRAP_API_KEY;
  if (key === undefined || key === "") return undefined;
  if (key.length < 16) throw new ConfigError("BOOTSTRAP_API_KEY", "must be at least 16 characters long");
  return key;
}

export function loadConfig(env: Env = process.env): Config {
  const megabyte = 1024 * 1024;
  return {
    nodeEnv: text(env, "NODE_ENV", "development"),
    host: text(env, "HOST", "127.0.0.1"),
    port: integer(env, "PORT", 8080, 0, 65535),
    databaseUrl: url(env, "DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/lora", ["postgresql:", "postgres:"]),
    redisUrl: url(env, "REDIS_URL", "redis://127.0.0.1:6379", ["redis:", "rediss:"]),
    queuePrefix: text(env, "QUEUE_PREFIX", "lora"),
    modelsDir: path.resolve(text(env, "MODELS_DIR", "var/models")),
    dataDir: path.resolve(text(env, "DATA_DIR", "var/data")),
    logLevel: oneOf(env, "LOG_LEVEL", LOG_LEVELS, "info"),
    trainerBackend: oneOf(env, "TRAINER_BACKEND", BACKENDS, "auto"),
    trainerBlasAddon: optionalPath(env, "TRAINER_BLAS_ADDON"),
    modelCacheSize: integer(env, "MODEL_CACHE_SIZE", 2, 1, 64),
    maxUploadBytes: integer(env, "MAX_UPLOAD_BYTES", 100 * megabyte, 1, 64 * 1024 * megabyte),
    maxJsonBodyBytes: integer(env, "MAX_JSON_BODY_BYTES", megabyte, 1024, 1024 * megabyte),
    bootstrapApiKey: bootstrapKey(env),
    rateLimitPerMinute: integer(env, "RATE_LIMIT_PER_MINUTE", 6000, 1, 10_000_000),
    workerConcurrency: integer(env, "WORKER_CONCURRENCY", 1, 1, 64),
    jobMaxAttempts: integer(env, "JOB_MAX_ATTEMPTS", 3, 1, 100),
    jobTimeoutMs: integer(env, "JOB_TIMEOUT_MS", 6 * 60 * 60 * 1000, 1000, 30 * 24 * 60 * 60 * 1000),
    shutdownTimeoutMs: integer(env, "SHUTDOWN_TIMEOUT_MS", 25_000, 100, 600_000),
    reconcileIntervalMs: integer(env, "RECONCILE_INTERVAL_MS", 30_000, 100, 24 * 60 * 60 * 1000),
    authCacheTtlMs: integer(env, "AUTH_CACHE_TTL_MS", 5000, 0, 600_000),
    enqueueTimeoutMs: integer(env, "ENQUEUE_TIMEOUT_MS", 2000, 10, 60_000),
    maxDatasetLineBytes: integer(env, "MAX_DATASET_LINE_BYTES", megabyte, 1024, 1024 * megabyte),
    eventsPollIntervalMs: integer(env, "EVENTS_POLL_INTERVAL_MS", 1000, 10, 60_000),
    sseHeartbeatMs: integer(env, "SSE_HEARTBEAT_MS", 15_000, 10, 600_000),
    predictModelCacheSize: integer(env, "PREDICT_MODEL_CACHE_SIZE", 2, 1, 64),
    predictMaxBatch: integer(env, "PREDICT_MAX_BATCH", 64, 1, 4096),
    artifactStore: oneOf(env, "ARTIFACT_STORE", ["fs", "s3"] as const, "fs"),
    s3Bucket: s3Bucket(env),
    s3Prefix: s3Prefix(env),
    s3Endpoint: optionalUrl(env, "S3_ENDPOINT", ["http:", "https:"]),
    s3Region: text(env, "S3_REGION", "us-east-1"),
    s3ForcePathStyle: boolean(env, "S3_FORCE_PATH_STYLE", false),
    artifactDownload: oneOf(env, "ARTIFACT_DOWNLOAD", ["stream", "redirect"] as const, "stream"),
    workerCacheMaxBytes: integer(env, "WORKER_CACHE_MAX_BYTES", 10 * 1024 * megabyte, megabyte, 2 ** 50),
    workerMaxMemory: optionalByteSize(env, "WORKER_MAX_MEMORY"),
    estimateDefaultTokensPerSecond: integer(env, "ESTIMATE_DEFAULT_TOKENS_PER_SECOND", 2000, 1, 100_000_000),
    webhookAllowedHosts: hostList(env, "WEBHOOK_ALLOWED_HOSTS"),
    webhookRetryWindowMs: integer(env, "WEBHOOK_RETRY_WINDOW_MS", 86_400_000, 1000, 7 * 86_400_000),
    webhookRetryBaseMs: integer(env, "WEBHOOK_RETRY_BASE_MS", 5000, 10, 3_600_000),
    webhookPollIntervalMs: integer(env, "WEBHOOK_POLL_INTERVAL_MS", 1000, 10, 600_000),
    webhookTimeoutMs: integer(env, "WEBHOOK_TIMEOUT_MS", 10_000, 100, 120_000),
    dataQualityMaxLeakagePercent: decimal(env, "DATA_QUALITY_MAX_LEAKAGE_PERCENT", 1, 0, 100),
    dataQualityMaxLabelConflicts: integer(env, "DATA_QUALITY_MAX_LABEL_CONFLICTS", 0, 0, 1_000_000_000),
  };
}

/** Loads the configuration or, on a bad value, prints one line naming the variable and exits 1. */
export function loadConfigOrExit(env: Env = process.env): Config {
  try {
    return loadConfig(env);
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`configuration error: ${error.message}\n`);
      process.exit(1);
    }
    throw error;
  }
}
