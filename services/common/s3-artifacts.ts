// Artifacts as objects in an S3-compatible bucket, so API replicas and workers need no shared
// disk: DATA_DIR only holds scratch files and local copies. Visibility is atomic for readers:
// a file is uploaded under a temporary key and copied into place; a folder (checkpoint,
// adapter) is uploaded file by file and becomes visible only when its manifest is written last.
import { randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { PassThrough, Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { getSignedUrl } from "@aws-sdk/s3-request-presigner";
import { LocalArea, type ArtifactStore } from "./artifacts.ts";

/** Lists a folder's files; written after them, so a folder without one is not there yet. */
export const MANIFEST = ".manifest.json";
/** Multipart part size and parallel parts: bounds an upload's memory to about their product. */
const PART_SIZE = 8 * 1024 * 1024;
const PARTS_IN_FLIGHT = 4;
const PRESIGNED_URL_SECONDS = 300;

export interface S3Settings {
  bucket: string;
  prefix: string;
  endpoint: string | undefined;
  region: string;
  forcePathStyle: boolean;
  /** Only for tests; otherwise the SDK's default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string };
}

interface Manifest {
  files: { path: string; sizeBytes: number }[];
}

const isMissing = (error: unknown) => {
  const { name, $metadata } = error as { name?: string; $metadata?: { httpStatusCode?: number } };
  return name === "NoSuchKey" || name === "NotFound" || $metadata?.httpStatusCode === 404;
};

async function filesUnder(dir: string, base = ""): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await fs.readdir(path.join(dir, base), { withFileTypes: true })) {
    const relative = base ? `${base}/${entry.name}` : entry.name;
    if (entry.isDirectory()) found.push(...(await filesUnder(dir, relative)));
    else if (entry.isFile()) found.push(relative);
  }
  return found.sort();
}

export class S3ArtifactStore extends LocalArea implements ArtifactStore {
  readonly kind = "s3" as const;
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(root: string, settings: S3Settings) {
    super(root);
    this.bucket = settings.bucket;
    this.prefix = settings.prefix === "" || settings.prefix.endsWith("/") ? settings.prefix : `${settings.prefix}/`;
    // Credentials come from the SDK's default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, profiles, roles).
    // Checksums only where S3 requires them: S3-compatible servers often reject the SDK's newer trailing checksums.
    this.client = new S3Client({
      region: settings.region,
      endpoint: settings.endpoint,
      forcePathStyle: settings.forcePathStyle,
      credentials: settings.credentials,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
    });
  }

  private objectKey(key: string): string {
    this.pathOf(key); // rejects keys that leave the root
    return this.prefix + key;
  }

  async commit(scratch: string, key: string, options: { keepLocal?: boolean } = {}): Promise<void> {
    await this.upload(scratch, key);
    if (options.keepLocal) await this.moveInto(scratch, key);
    else await fs.rm(scratch, { recursive: true, force: true });
  }

  async publish(key: string): Promise<void> {
    await this.upload(this.pathOf(key), key);
  }

  /** Uploads a local file or folder from outside DATA_DIR (an operator's model folder) to `key`; the source stays. */
  async publishFrom(local: string, key: string): Promise<void> {
    await this.upload(local, key);
  }

  /** The names of the whole folders (manifest written) directly under `under`, e.g. models/. */
  async listFolders(under: string): Promise<string[]> {
    const base = this.objectKey(under.replace(/\/$/, "")) + "/";
    const names: string[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: base, ContinuationToken: token }));
      for (const object of page.Contents ?? []) {
        const [name, file, ...rest] = (object.Key ?? "").slice(base.length).split("/");
        if (name && file === MANIFEST && rest.length === 0) names.push(name);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return names.sort();
  }

  private async upload(local: string, key: string): Promise<void> {
    if ((await fs.stat(local)).isDirectory()) await this.uploadFolder(local, key);
    else await this.uploadFile(local, key);
  }

  /** Uploads under a temporary key, then copies into place: readers see the old object or the whole new one. */
  private async uploadFile(local: string, key: string): Promise<void> {
    const temporary = `${this.prefix}tmp/${randomUUID()}`;
    await this.put(temporary, local);
    try {
      await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key), CopySource: `${this.bucket}/${encodeURI(temporary)}` }));
    } finally {
      await this.deleteObject(temporary);
    }
  }

  /** Uploads every file, then the manifest: the folder is invisible until it is whole. */
  private async uploadFolder(local: string, key: string): Promise<void> {
    await this.deleteObject(this.objectKey(`${key}/${MANIFEST}`));
    const files = await filesUnder(local);
    const manifest: Manifest = { files: [] };
    for (const file of files) {
      if (file === MANIFEST) continue;
      await this.put(this.objectKey(`${key}/${file}`), path.join(local, file));
      manifest.files.push({ path: file, sizeBytes: (await fs.stat(path.join(local, file))).size });
    }
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(`${key}/${MANIFEST}`), Body: JSON.stringify(manifest), ContentType: "application/json" }),
    );
  }

  /** Streams a local file up; multipart above one part, so memory stays bounded whatever the size. */
  private async put(objectKey: string, local: string): Promise<void> {
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: objectKey, Body: createReadStream(local) },
      partSize: PART_SIZE,
      queueSize: PARTS_IN_FLIGHT,
    });
    await upload.done();
  }

  private async manifestOf(key: string): Promise<Manifest | undefined> {
    try {
      const answer = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(`${key}/${MANIFEST}`) }));
      return JSON.parse(await answer.Body!.transformToString()) as Manifest;
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
  }

  async exists(key: string): Promise<boolean> {
    for (const candidate of [key, `${key}/${MANIFEST}`]) {
      try {
        await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.objectKey(candidate) }));
        return true;
      } catch (error) {
        if (!isMissing(error)) throw error;
      }
    }
    return false;
  }

  /** A local copy that exists is whole: downloads land in scratch and are renamed into place. */
  async fetch(key: string): Promise<string> {
    const local = this.pathOf(key);
    if (await this.localExists(key)) return local;
    const scratch = await this.scratchPath("download");
    try {
      const manifest = await this.manifestOf(key);
      if (manifest) {
        for (const file of manifest.files) {
          await fs.mkdir(path.dirname(path.join(scratch, file.path)), { recursive: true });
          await this.download(`${key}/${file.path}`, path.join(scratch, file.path));
        }
      } else {
        await this.download(key, scratch);
      }
      if (await this.localExists(key)) await fs.rm(scratch, { recursive: true, force: true });
      else await this.moveInto(scratch, key);
    } catch (error) {
      await fs.rm(scratch, { recursive: true, force: true });
      throw error;
    }
    return local;
  }

  private async download(key: string, local: string): Promise<void> {
    const answer = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) }));
    await pipeline(answer.Body as Readable, createWriteStream(local));
  }

  read(key: string): Readable {
    const out = new PassThrough();
    this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(key) })).then(
      (answer) => (answer.Body as Readable).on("error", (error) => out.destroy(error)).pipe(out),
      (error: Error) => out.destroy(error),
    );
    return out;
  }

  async remove(key: string): Promise<void> {
    // The manifest first: a folder being removed stops being visible at once.
    await this.deleteObject(this.objectKey(`${key}/${MANIFEST}`));
    await this.deleteObject(this.objectKey(key));
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.objectKey(key) + "/", ContinuationToken: token }));
      for (const object of page.Contents ?? []) if (object.Key) await this.deleteObject(object.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    await this.dropLocal(key);
  }

  async dropLocal(key: string): Promise<void> {
    await fs.rm(this.pathOf(key), { recursive: true, force: true });
  }

  async downloadUrl(key: string, fileName: string): Promise<string> {
    const command = new GetObjectCommand({
      Bucket: this.bucket,
      Key: this.objectKey(key),
      ResponseContentDisposition: `attachment; filename="${fileName}"`,
    });
    return getSignedUrl(this.client, command, { expiresIn: PRESIGNED_URL_SECONDS });
  }

  private async deleteObject(objectKey: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: objectKey }));
  }

  /** For readiness: the bucket answers within 2 s, and DATA_DIR (scratch and cache) is writable. */
  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: AbortSignal.timeout(2000) });
    await this.localWritable();
  }

  close(): void {
    this.client.destroy();
  }
}
