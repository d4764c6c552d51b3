import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { describe, it } from "node:test";
import { ConfigError, loadConfig } from "../../services/common/config.ts";

describe("configuration", () => {
  it("has defaults that work on a development machine", () => {
    const config = loadConfig({});
    assert.equal(config.port, 8080);
    assert.equal(config.databaseUrl, "postgresql://postgres@127.0.0.1:5432/lora");
    assert.equal(config.redisUrl, "redis://127.0.0.1:6379");
    assert.equal(config.trainerBackend, "auto");
    assert.equal(config.maxUploadBytes, 100 * 1024 * 1024);
    assert.equal(config.dataQualityMaxLeakagePercent, 1);
    assert.equal(config.dataQualityMaxLabelConflicts, 0);
    assert.equal(loadConfig({ DATA_QUALITY_MAX_LEAKAGE_PERCENT: "2.5" }).dataQualityMaxLeakagePercent, 2.5);
    assert.equal(config.workerMaxMemory, undefined, "no memory limit unless one is set");
  });

  it("reads WORKER_MAX_MEMORY as bytes, with binary or decimal units", () => {
    const size = (value: string) => loadConfig({ WORKER_MAX_MEMORY: value }).workerMaxMemory;
    assert.equal(size("17179869184"), 16 * 2 ** 30);
    assert.equal(size("16GiB"), 16 * 2 ** 30);
    assert.equal(size("1.5 GB"), 1.5e9);
    assert.equal(size("512mib"), 512 * 2 ** 20);
  });

  for (const [variable, value, pattern] of [
    ["PORT", "eighty", /PORT must be an integer/],
    ["PORT", "70000", /PORT must be between 0 and 65535/],
    ["DATABASE_URL", "mysql://x/y", /DATABASE_URL must use postgresql:/],
    ["REDIS_URL", "not a url", /REDIS_URL is not a valid URL/],
    ["TRAINER_BACKEND", "gpu", /TRAINER_BACKEND must be one of auto, tensorflow, wasm-blas, wasm, cpu/],
    ["LOG_LEVEL", "loud", /LOG_LEVEL must be one of/],
    ["MAX_UPLOAD_BYTES", "0", /MAX_UPLOAD_BYTES must be between/],
    ["ARTIFACT_STORE", "nfs", /ARTIFACT_STORE must be one of fs, s3/],
    ["S3_BUCKET", "No_Such", /S3_BUCKET is not a valid bucket name/],
    ["S3_PREFIX", "/abs", /S3_PREFIX must be a relative key prefix/],
    ["S3_ENDPOINT", "ftp://x", /S3_ENDPOINT must use http: or https:/],
    ["S3_FORCE_PATH_STYLE", "yes", /S3_FORCE_PATH_STYLE must be true or false/],
    ["ARTIFACT_DOWNLOAD", "proxy", /ARTIFACT_DOWNLOAD must be one of stream, redirect/],
    ["WORKER_CACHE_MAX_BYTES", "10", /WORKER_CACHE_MAX_BYTES must be between/],
    ["WORKER_MAX_MEMORY", "16 gigs", /WORKER_MAX_MEMORY must be a size in bytes/],
    ["WORKER_MAX_MEMORY", "0GiB", /WORKER_MAX_MEMORY must be at least 1 byte/],
    ["DATA_QUALITY_MAX_LEAKAGE_PERCENT", "one", /DATA_QUALITY_MAX_LEAKAGE_PERCENT must be a number/],
    ["DATA_QUALITY_MAX_LEAKAGE_PERCENT", "101", /DATA_QUALITY_MAX_LEAKAGE_PERCENT must be between 0 and 100/],
    ["DATA_QUALITY_MAX_LABEL_CONFLICTS", "-1", /DATA_QUALITY_MAX_LABEL_CONFLICTS must be between/],
  ] as const) {
    it(`rejects ${variable}=${value} naming the variable`, () => {
      assert.throws(() => loadConfig({ [variable]: value }), (error: unknown) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(error.variable, variable);
        assert.match(error.message, pattern);
        return true;
      });
    });
  }

  it("requires S3_BUCKET with ARTIFACT_STORE=s3 and reads the S3 settings", () => {
    assert.throws(() => loadConfig({ ARTIFACT_STORE: "s3" }), /S3_BUCKET is required when ARTIFACT_STORE=s3/);
    const config = loadConfig({ ARTIFACT_STORE: "s3", S3_BUCKET: "lora-artifacts", S3_ENDPOINT: "http://127.0.0.1:9000", S3_FORCE_PATH_STYLE: "true", ARTIFACT_DOWNLOAD: "redirect" });
    assert.equal(config.artifactStore, "s3");
    assert.equal(config.s3Bucket, "lora-artifacts");
    assert.equal(config.s3Endpoint, "http://127.0.0.1:9000");
    assert.equal(config.s3ForcePathStyle, true);
    assert.equal(config.s3Region, "us-east-1");
    assert.equal(config.artifactDownload, "redirect");
    assert.equal(loadConfig({}).artifactStore, "fs");
  });

  it("makes the API process exit 1 with one line naming the variable", () => {
    const root = path.resolve(import.meta.dirname, "../..");
    const result = spawnSync(process.execPath, ["--import", "tsx", "services/api/server.ts"], {
      cwd: root,
      env: { ...process.env, PORT: "eighty" },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(result.status, 1);
    assert.equal(result.stderr.trim(), 'configuration error: PORT must be an integer, got "eighty"');
  });
});
