// The artifact store contract, run against both stores: the filesystem under DATA_DIR and an
// S3 bucket on a real S3-protocol server (s3rver), where each store instance has its own
// DATA_DIR as a cache, like API replicas and workers on different machines.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { PutObjectCommand } from "@aws-sdk/client-s3";
import { packAdapterFolder } from "../../services/common/adapter-archive.ts";
import { FsArtifactStore, type ArtifactStore } from "../../services/common/artifacts.ts";
import { createLogger } from "../../services/common/logger.ts";
import { S3ArtifactStore } from "../../services/common/s3-artifacts.ts";
import Fastify from "fastify";
import { healthRoutes } from "../../services/api/routes/health.ts";
import { errorsPlugin } from "../../services/api/plugins/errors.ts";
import { freePort } from "../helpers/redis-server.ts";
import { LocalCache } from "../../services/worker/local-cache.ts";
import { TestS3 } from "../helpers/s3-server.ts";

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function scratchFile(store: ArtifactStore, bytes: Buffer | string): Promise<string> {
  const file = await store.scratchPath("test");
  await fs.writeFile(file, bytes);
  return file;
}

async function scratchFolder(store: ArtifactStore, files: Record<string, string>): Promise<string> {
  const dir = await store.scratchPath("test-folder");
  for (const [name, bytes] of Object.entries(files)) {
    await fs.mkdir(path.dirname(path.join(dir, name)), { recursive: true });
    await fs.writeFile(path.join(dir, name), bytes);
  }
  return dir;
}

for (const kind of ["fs", "s3"] as const) {
  describe(`artifact store: ${kind}`, () => {
    let root: string;
    let s3: TestS3 | undefined;
    /** Two stores on the same artifacts: with s3 each has its own DATA_DIR, as on two machines. */
    let writer: ArtifactStore;
    let reader: ArtifactStore;

    before(async () => {
      root = await fs.mkdtemp(path.join(os.tmpdir(), `lora-stores-${kind}-`));
      if (kind === "s3") {
        s3 = await TestS3.start("stores");
        writer = s3.store(path.join(root, "a"));
        reader = s3.store(path.join(root, "b"));
      } else {
        writer = new FsArtifactStore(path.join(root, "a"));
        reader = new FsArtifactStore(path.join(root, "a"));
      }
    });
    after(async () => {
      await s3?.stop();
      await fs.rm(root, { recursive: true, force: true });
    });

    it("commits a file that another store reads, streams and fetches; a second commit replaces it", async () => {
      assert.equal(await reader.exists("datasets/aa/one.jsonl"), false);
      await writer.commit(await scratchFile(writer, "first\n"), "datasets/aa/one.jsonl");
      assert.equal(await reader.exists("datasets/aa/one.jsonl"), true);
      assert.equal((await readAll(reader.read("datasets/aa/one.jsonl"))).toString(), "first\n");
      await writer.commit(await scratchFile(writer, "second\n"), "datasets/aa/one.jsonl");
      assert.equal((await readAll(reader.read("datasets/aa/one.jsonl"))).toString(), "second\n");
      const local = await reader.fetch("datasets/aa/one.jsonl");
      assert.equal(await fs.readFile(local, "utf8"), "second\n");
      assert.deepEqual(await fs.readdir(path.join(writer.root, "tmp")), [], "no scratch file is left behind");
    });

    it("streams a 24 MB file through multipart upload and back with the same sha256", async () => {
      const big = Buffer.alloc(24 * 1024 * 1024);
      for (let index = 0; index < big.length; index += 4096) big.writeUInt32LE(index, index);
      const stored = await writer.writeScratch("big", Readable.from([big.subarray(0, 10_000_000), big.subarray(10_000_000)]));
      assert.equal(stored.sha256, createHash("sha256").update(big).digest("hex"));
      await writer.commit(stored.scratch, "datasets/big.jsonl");
      const hash = createHash("sha256");
      for await (const chunk of reader.read("datasets/big.jsonl")) hash.update(chunk as Buffer);
      assert.equal(hash.digest("hex"), stored.sha256);
    });

    it("a read of a missing key fails the stream", async () => {
      await assert.rejects(readAll(reader.read("datasets/none.jsonl")));
    });

    it("commits and publishes folders whole; removing one removes every file", async () => {
      await writer.commit(await scratchFolder(writer, { "a.json": "{}", "nested/b.bin": "bytes" }), "adapters/one");
      const local = await reader.fetch("adapters/one");
      assert.equal(await fs.readFile(path.join(local, "nested/b.bin"), "utf8"), "bytes");
      assert.equal(await reader.exists("adapters/one"), true);

      // Written in place, as the engine writes a checkpoint, then published.
      const checkpoint = writer.pathOf("jobs/j1/checkpoints/step-2");
      await fs.mkdir(checkpoint, { recursive: true });
      await fs.writeFile(path.join(checkpoint, "trainer_state.json"), '{"step":2}');
      await writer.publish("jobs/j1/checkpoints/step-2");
      await reader.dropLocal("jobs/j1");
      assert.equal(await fs.readFile(path.join(await reader.fetch("jobs/j1/checkpoints/step-2"), "trainer_state.json"), "utf8"), '{"step":2}');

      await writer.remove("jobs/j1");
      await writer.remove("adapters/one");
      assert.equal(await reader.exists("adapters/one"), false);
      assert.equal(await reader.exists("jobs/j1/checkpoints/step-2"), false);
    });

    it("packs an adapter folder to the same archive bytes from either store", async () => {
      await writer.commit(await scratchFolder(writer, { "adapter_config.json": '{"r":4}', "adapter_model.safetensors": "weights" }), "adapters/two");
      const packed = await packAdapterFolder(writer, "adapters/two");
      await reader.dropLocal("adapters/two");
      const archive = await readAll(reader.read(packed.archiveKey));
      assert.equal(createHash("sha256").update(archive).digest("hex"), packed.sha256);
      assert.deepEqual(packed.files.map((file) => file.name), ["adapter_config.json", "adapter_model.safetensors"]);
    });

    it("answers readiness pings", async () => {
      await writer.ping();
      await reader.ping();
    });

    if (kind === "s3") {
      it("fails the readiness ping, and /readyz names the artifact store, when the bucket does not answer", async () => {
        const gone = new S3ArtifactStore(path.join(root, "c"), { bucket: "no-such-server", prefix: "", endpoint: `http://127.0.0.1:${await freePort()}`, region: "us-east-1", forcePathStyle: true, credentials: { accessKeyId: "x", secretAccessKey: "y" } });
        await assert.rejects(gone.ping());
        const app = Fastify();
        await app.register(errorsPlugin);
        await app.register(healthRoutes, { prisma: {} as never, redis: { status: "end" } as never, store: gone, backend: () => undefined });
        const ready = await app.inject({ method: "GET", url: "/readyz" });
        await app.close();
        gone.close();
        assert.equal(ready.statusCode, 503);
        assert.equal(ready.json().checks.artifacts.ok, false);
        assert.match(ready.json().error.message, /artifacts/);
      });

      it("does not show a folder whose files are uploaded but whose manifest is not yet written", async () => {
        const client = (writer as S3ArtifactStore).client;
        await client.send(new PutObjectCommand({ Bucket: s3!.bucket, Key: "artifacts/jobs/j2/checkpoints/step-4/adapter_model.safetensors", Body: "half" }));
        assert.equal(await reader.exists("jobs/j2/checkpoints/step-4"), false);
        await assert.rejects(reader.fetch("jobs/j2/checkpoints/step-4"));
        await assert.rejects(fs.access(reader.pathOf("jobs/j2/checkpoints/step-4")), "a failed fetch leaves no local copy");
      });

      it("answers a presigned URL that serves the object without the API", async () => {
        const url = await reader.downloadUrl("datasets/aa/one.jsonl", "one.jsonl");
        assert.ok(url);
        const response = await fetch(url);
        assert.equal(response.status, 200);
        assert.equal(await response.text(), "second\n");
        assert.match(response.headers.get("content-disposition") ?? "", /one\.jsonl/);
      });

      it("keeps a worker's cached datasets under its size bound, evicting the least recently used not in use", async () => {
        for (const name of ["a", "b", "c"]) await writer.commit(await scratchFile(writer, Buffer.alloc(1000, name)), `datasets/${name}.jsonl`);
        const cache = new LocalCache(reader, 2500, createLogger("silent", "test"));
        const a = await cache.acquire("datasets/a.jsonl");
        const b = await cache.acquire("datasets/b.jsonl");
        b.release();
        a.release();
        (await cache.acquire("datasets/a.jsonl")).release(); // a is now the most recently used
        const held = await cache.acquire("datasets/c.jsonl");
        assert.deepEqual(cache.keys(), ["datasets/a.jsonl", "datasets/c.jsonl"]);
        await assert.rejects(fs.access(reader.pathOf("datasets/b.jsonl")), "b's local copy was deleted");
        assert.equal((await fs.readFile(held.path)).length, 1000);
        held.release();
        // A file bigger than the bound is still served while held, and evicted once released.
        await writer.commit(await scratchFile(writer, Buffer.alloc(3000, "d")), "datasets/d.jsonl");
        const d = await cache.acquire("datasets/d.jsonl");
        assert.equal((await fs.readFile(d.path)).length, 3000);
        d.release();
        (await cache.acquire("datasets/a.jsonl")).release();
        assert.ok(cache.sizeBytes <= 2500, `cache holds ${cache.sizeBytes} bytes`);
      });
    }
  });
}
