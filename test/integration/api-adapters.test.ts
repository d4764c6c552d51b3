import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { after, before, describe, it } from "node:test";
import request from "supertest";
import tar from "tar-stream";
import { archiveKeyOf, packAdapterFolder } from "../../services/common/adapter-archive.ts";
import { classificationRecords, jsonl, startTestApi, type TestApi } from "../helpers/api.ts";
import { TestS3 } from "../helpers/s3-server.ts";

const binaryParser = (response: request.Response, callback: (error: Error | null, body: Buffer) => void) => {
  const chunks: Buffer[] = [];
  response.on("data", (chunk: Buffer) => chunks.push(chunk));
  response.on("end", () => callback(null, Buffer.concat(chunks)));
};

async function untar(archive: Buffer): Promise<Record<string, Buffer>> {
  const files: Record<string, Buffer> = {};
  const extract = tar.extract();
  extract.on("entry", (header, stream, next) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk) => chunks.push(chunk as Buffer));
    stream.on("end", () => {
      files[header.name] = Buffer.concat(chunks);
      next();
    });
  });
  const finished = new Promise((resolve, reject) => extract.on("finish", () => resolve(undefined)).on("error", reject));
  Readable.from([archive]).pipe(createGunzip()).pipe(extract);
  await finished;
  return files;
}

// Run against both artifact stores: DATA_DIR, and an S3 bucket on a real S3-protocol server.
for (const kind of ["fs", "s3"] as const) {
describe(`adapters API (${kind} store)`, () => {
  let api: TestApi;
  let s3: TestS3 | undefined;
  let adapterId: string;
  let storageKey: string;
  const folder: Record<string, Buffer> = {
    "adapter_config.json": Buffer.from(JSON.stringify({ peft_type: "LORA", r: 8, lora_alpha: 16, target_modules: ["q_lin", "v_lin"] })),
    "adapter_model.safetensors": Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7d, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 1, 2, 3, 4]),
    "metrics.json": Buffer.from(JSON.stringify({ accuracy: 0.9 })),
  };
  const get = (url: string, key?: string) => request(api.app.server).get(url).set("authorization", key ?? api.keys.a);

  /** What the worker will do on success: write the PEFT folder, pack it, record the row. */
  async function createAdapter(tenantKey: string): Promise<{ id: string; storageKey: string }> {
    const datasetId = (await request(api.app.server).post("/v1/datasets").set("authorization", tenantKey).attach("file", jsonl(classificationRecords(5)), "d.jsonl").expect(201)).body.id;
    const job = (await request(api.app.server).post("/v1/jobs").set("authorization", tenantKey).send({ baseModel: "tiny-distilbert", trainDatasetId: datasetId }).expect(201)).body;
    const key = `adapters/${job.id}`;
    await fs.mkdir(api.store.pathOf(key), { recursive: true });
    for (const [name, bytes] of Object.entries(folder)) await fs.writeFile(path.join(api.store.pathOf(key), name), bytes);
    await api.store.publish(key);
    const packed = await packAdapterFolder(api.store, key);
    const row = await api.db.prisma.job.findUniqueOrThrow({ where: { id: job.id } });
    const adapter = await api.db.prisma.adapter.create({
      data: {
        tenantId: row.tenantId,
        jobId: job.id,
        baseModelId: "tiny-distilbert",
        task: "classification",
        rank: 8,
        alpha: 16,
        targetModules: ["q_lin", "v_lin"],
        files: packed.files as unknown as object,
        sizeBytes: BigInt(packed.sizeBytes),
        sha256: packed.sha256,
        storageKey: key,
        metrics: { accuracy: 0.9 },
      },
    });
    await api.db.prisma.job.update({ where: { id: job.id }, data: { status: "succeeded" } });
    return { id: adapter.id, storageKey: key };
  }

  before(async () => {
    if (kind === "s3") s3 = await TestS3.start("adapters");
    api = await startTestApi(`adapters_${kind}`, {}, undefined, s3);
    ({ id: adapterId, storageKey } = await createAdapter(api.keys.a));
  });
  after(async () => {
    await api.close();
    await s3?.stop();
  });

  it("lists and gets adapters, and the job points at its adapter", async () => {
    const list = (await get("/v1/adapters").expect(200)).body;
    assert.deepEqual(list.data.map((adapter: { id: string }) => adapter.id), [adapterId]);
    const adapter = (await get(`/v1/adapters/${adapterId}`).expect(200)).body;
    assert.equal(adapter.rank, 8);
    assert.deepEqual(adapter.targetModules, ["q_lin", "v_lin"]);
    assert.deepEqual(adapter.files.map((file: { name: string }) => file.name), Object.keys(folder).sort());
    assert.equal(adapter.storageKey, undefined);
    const job = (await get(`/v1/jobs/${adapter.jobId}`).expect(200)).body;
    assert.equal(job.adapterId, adapterId);
    assert.deepEqual((await get("/v1/adapters", api.keys.b).expect(200)).body.data, []);
    await get(`/v1/adapters/${adapterId}`, api.keys.b).expect(404);
    await get("/v1/adapters/00000000-0000-4000-8000-000000000000").expect(404);
    await get("/v1/adapters?cursor=%%%").expect(400);
  });

  it("downloads the PEFT folder as tar.gz whose sha256 is the ETag, and answers If-None-Match with 304", async () => {
    const response = await get(`/v1/adapters/${adapterId}/download`).buffer(true).parse(binaryParser).expect(200);
    assert.equal(response.headers["content-type"], "application/gzip");
    const body = response.body as Buffer;
    const sha256 = createHash("sha256").update(body).digest("hex");
    assert.equal(response.headers.etag, `"${sha256}"`);
    const adapter = (await get(`/v1/adapters/${adapterId}`).expect(200)).body;
    assert.equal(adapter.sha256, sha256);
    assert.equal(adapter.sizeBytes, body.length);
    assert.deepEqual(await untar(body), folder);
    const cached = await get(`/v1/adapters/${adapterId}/download`).set("if-none-match", `"${sha256}"`).expect(304);
    assert.equal(cached.headers.etag, `"${sha256}"`);
    await get(`/v1/adapters/${adapterId}/download`).set("if-none-match", '"something-else"').expect(200);
    await get(`/v1/adapters/${adapterId}/download`, api.keys.b).expect(404);
  });

  it("rebuilds a missing archive byte for byte", async () => {
    const before = (await get(`/v1/adapters/${adapterId}/download`).buffer(true).parse(binaryParser).expect(200)).body as Buffer;
    await api.store.remove(archiveKeyOf(storageKey));
    await api.store.dropLocal(storageKey);
    const after = await get(`/v1/adapters/${adapterId}/download`).buffer(true).parse(binaryParser).expect(200);
    assert.deepEqual(after.body, before);
    assert.equal(after.headers.etag, `"${createHash("sha256").update(before).digest("hex")}"`);
  });

  it("serves single files named in the manifest and nothing else", async () => {
    const config = await get(`/v1/adapters/${adapterId}/files/adapter_config.json`).expect(200);
    assert.match(config.headers["content-type"], /application\/json/);
    assert.deepEqual(config.body, JSON.parse(folder["adapter_config.json"].toString()));
    const weights = await get(`/v1/adapters/${adapterId}/files/adapter_model.safetensors`).buffer(true).parse(binaryParser).expect(200);
    assert.deepEqual(weights.body, folder["adapter_model.safetensors"]);
    const etag = `"${createHash("sha256").update(folder["adapter_model.safetensors"]).digest("hex")}"`;
    assert.equal(weights.headers.etag, etag);
    await get(`/v1/adapters/${adapterId}/files/adapter_model.safetensors`).set("if-none-match", etag).expect(304);
    await fs.writeFile(path.join(api.store.pathOf(storageKey), "secret.txt"), "not in the manifest");
    await api.store.publish(storageKey);
    await get(`/v1/adapters/${adapterId}/files/secret.txt`).expect(404);
    await get(`/v1/adapters/${adapterId}/files/..%2F..%2Fetc%2Fpasswd`).expect(404);
    await get(`/v1/adapters/${adapterId}/files/adapter_config.json`, api.keys.b).expect(404);
  });
});
}
