// With the S3 store an API process streams both ways: uploading a 200 MB dataset and downloading
// a 200 MB adapter archive each grow its resident memory by less than 150 MB. The peak is read
// from the kernel (VmHWM, reset through /proc/<pid>/clear_refs before each transfer).
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, openAsBlob } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { createApiKey } from "../../services/common/auth.ts";
import { writeModels } from "../helpers/api.ts";
import { freePort } from "../helpers/redis-server.ts";
import { TestS3 } from "../helpers/s3-server.ts";
import { createTestDatabase, TEST_REDIS_URL, testQueuePrefix, type TestDatabase } from "../helpers/services.ts";
import { ServiceProcess, waitFor } from "../helpers/worker-harness.ts";

const MB = 1024 * 1024;
const SIZE = 200 * MB;
const MAX_GROWTH = 150 * MB;

async function statusField(pid: number, field: "VmRSS" | "VmHWM"): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status);
  assert.ok(match, `no ${field} in /proc/${pid}/status`);
  return Number(match[1]) * 1024;
}

/** Peak resident memory of `pid` during `work`, above its resident memory just before. */
async function peakGrowth(pid: number, work: () => Promise<void>): Promise<{ growth: number; shown: string }> {
  await fs.writeFile(`/proc/${pid}/clear_refs`, "5"); // resets VmHWM to the current VmRSS
  const before = await statusField(pid, "VmRSS");
  await work();
  const peak = await statusField(pid, "VmHWM");
  return { growth: peak - before, shown: `${((peak - before) / MB).toFixed(1)} MB (RSS ${(before / MB).toFixed(0)} MB before, peak ${(peak / MB).toFixed(0)} MB)` };
}

describe("S3 store: API memory while streaming 200 MB each way", () => {
  let db: TestDatabase;
  let s3: TestS3;
  let root: string;
  let api: ServiceProcess;
  let url: string;
  let key: string;

  before(async () => {
    db = await createTestDatabase("s3_memory");
    s3 = await TestS3.start("memory");
    root = await fs.mkdtemp(path.join(os.tmpdir(), "lora-s3-memory-"));
    await writeModels(path.join(root, "models"));
    // With the s3 store the API lists base models from the bucket.
    const seed = s3.store(path.join(root, "seed"));
    await seed.publishFrom(path.join(root, "models", "tiny-distilbert"), "models/tiny-distilbert");
    seed.close();
    const port = await freePort();
    api = ServiceProcess.api({
      ...s3.env(),
      DATABASE_URL: db.url,
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: testQueuePrefix("memory"),
      DATA_DIR: path.join(root, "api-data"),
      MODELS_DIR: path.join(root, "models"),
      HOST: "127.0.0.1",
      PORT: String(port),
      MAX_UPLOAD_BYTES: String(SIZE + 10 * MB),
      TRAINER_BACKEND: "cpu",
    });
    url = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${url}/healthz`).catch(() => undefined))?.ok, 60_000, () => `the API to answer /healthz\n${api.log}`);
    key = `Bearer ${(await createApiKey(db.prisma, "tenant-a", "memory")).key}`;
    // Warm up the routes, so lazily loaded code is not counted as growth.
    const small = new FormData();
    small.append("file", new Blob(['{"text":"warm","label":"a"}\n']), "warm.jsonl");
    assert.equal((await fetch(`${url}/v1/datasets`, { method: "POST", headers: { authorization: key }, body: small })).status, 201);
  });

  after(async () => {
    await api?.stop();
    await s3?.stop();
    await db?.drop();
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  it("uploads a 200 MB dataset and downloads a 200 MB archive, each with under 150 MB RSS growth", async (t) => {
    const datasetFile = path.join(root, "big.jsonl");
    const out = createWriteStream(datasetFile);
    const hash = createHash("sha256");
    for (let written = 0, index = 0; written < SIZE; index += 1) {
      const line = `${JSON.stringify({ text: `record ${index} ${"lorem ipsum dolor ".repeat(10)}`, label: index % 2 ? "a" : "b" })}\n`;
      hash.update(line);
      written += Buffer.byteLength(line);
      if (!out.write(line)) await new Promise<void>((resolve) => out.once("drain", () => resolve()));
    }
    await new Promise<void>((resolve) => out.end(() => resolve()));
    const datasetSha = hash.digest("hex");

    let dataset: { id: string; sha256: string; sizeBytes: number } | undefined;
    const upload = await peakGrowth(api.pid, async () => {
      const form = new FormData();
      form.append("file", await openAsBlob(datasetFile), "big.jsonl");
      const response = await fetch(`${url}/v1/datasets`, { method: "POST", headers: { authorization: key }, body: form });
      assert.equal(response.status, 201, `${await response.clone().text()}\n${api.log}`);
      dataset = (await response.json()) as typeof dataset;
    });
    assert.equal(dataset!.sha256, datasetSha);
    t.diagnostic(`upload of ${(dataset!.sizeBytes / MB).toFixed(0)} MB: API RSS grew by ${upload.shown}`);

    // A 200 MB archive in the bucket, and the rows of the job that made it.
    const archive = path.join(root, "archive.tar.gz");
    const archiveHash = createHash("sha256");
    const archiveOut = createWriteStream(archive);
    for (let written = 0; written < SIZE; written += MB) {
      const chunk = randomBytes(MB);
      archiveHash.update(chunk);
      if (!archiveOut.write(chunk)) await new Promise<void>((resolve) => archiveOut.once("drain", () => resolve()));
    }
    await new Promise<void>((resolve) => archiveOut.end(() => resolve()));
    const archiveSha = archiveHash.digest("hex");
    const job = await fetch(`${url}/v1/jobs`, {
      method: "POST",
      headers: { authorization: key, "content-type": "application/json" },
      body: JSON.stringify({ baseModel: "tiny-distilbert", trainDatasetId: dataset!.id }),
    });
    assert.equal(job.status, 201, await job.clone().text());
    const jobRow = await db.prisma.job.findUniqueOrThrow({ where: { id: ((await job.json()) as { id: string }).id } });
    const storageKey = `adapters/${jobRow.id}`;
    await s3.store(path.join(root, "seed")).commit(archive, `${storageKey}.tar.gz`);
    const adapter = await db.prisma.adapter.create({
      data: { tenantId: jobRow.tenantId, jobId: jobRow.id, baseModelId: "tiny-distilbert", task: "classification", rank: 4, alpha: 8, targetModules: ["q_lin"], files: [], sizeBytes: BigInt(SIZE), sha256: archiveSha, storageKey, metrics: {} },
    });

    const download = await peakGrowth(api.pid, async () => {
      const response = await fetch(`${url}/v1/adapters/${adapter.id}/download`, { headers: { authorization: key } });
      assert.equal(response.status, 200);
      assert.equal(response.headers.get("etag"), `"${archiveSha}"`);
      const received = createHash("sha256");
      let bytes = 0;
      for await (const chunk of response.body!) {
        received.update(chunk);
        bytes += chunk.length;
      }
      assert.equal(bytes, SIZE);
      assert.equal(received.digest("hex"), archiveSha);
    });
    t.diagnostic(`download of ${SIZE / MB} MB: API RSS grew by ${download.shown}`);

    assert.ok(upload.growth < MAX_GROWTH, `the upload grew the API's RSS by ${upload.shown}`);
    assert.ok(download.growth < MAX_GROWTH, `the download grew the API's RSS by ${download.shown}`);
  });
});
