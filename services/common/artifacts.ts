// Where datasets, checkpoints and adapters live. Two stores behind one interface: the local
// filesystem under DATA_DIR (fs), or S3-compatible object storage (s3-artifacts.ts), for which
// DATA_DIR is only a local cache. Either way a key's local copy is at `pathOf(key)`, scratch
// work happens under DATA_DIR/tmp, and nothing half-written is ever visible to a reader.
import { createHash, randomUUID } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

export interface StoredObject {
  sizeBytes: number;
  sha256: string;
}

export interface ArtifactStore {
  readonly kind: "fs" | "s3";
  /** DATA_DIR: the artifacts themselves (fs) or their local copies (s3). */
  readonly root: string;
  /** Local path of a key; keys are relative, slash-separated and never leave the root. */
  pathOf(key: string): string;
  /** A fresh local path on DATA_DIR's filesystem for building something before `commit`. */
  scratchPath(label: string): Promise<string>;
  /** Streams `source` through `transforms` into a local scratch file, hashing on the way. */
  writeScratch(label: string, source: Readable, ...transforms: Transform[]): Promise<StoredObject & { scratch: string }>;
  /** Publishes a finished scratch file or folder at `key`, replacing what was there; the scratch is consumed. With keepLocal it stays as the key's local copy. */
  commit(scratch: string, key: string, options?: { keepLocal?: boolean }): Promise<void>;
  /** Publishes what was written in place at `pathOf(key)` (fs: it already is). */
  publish(key: string): Promise<void>;
  /** Makes sure `pathOf(key)` holds the key's file or folder, downloading it if needed; answers that path. */
  fetch(key: string): Promise<string>;
  exists(key: string): Promise<boolean>;
  /** The bytes of a file key, streamed. */
  read(key: string): Readable;
  /** Removes the key (file or folder) from the store and its local copy. */
  remove(key: string): Promise<void>;
  /** Frees the local copy only (s3); the fs store keeps its artifacts. */
  dropLocal(key: string): Promise<void>;
  /** A short-lived URL a client can download the key from directly, when the store has one. */
  downloadUrl(key: string, fileName: string): Promise<string | undefined>;
  /** For readiness: resolves when the store can be written (fs) or the bucket answers (s3). */
  ping(): Promise<void>;
}

/** Local paths and scratch files under DATA_DIR, shared by both stores. */
export abstract class LocalArea {
  constructor(readonly root: string) {}

  pathOf(key: string): string {
    const resolved = path.resolve(this.root, key);
    if (!resolved.startsWith(path.resolve(this.root) + path.sep)) throw new Error(`invalid artifact key: ${key}`);
    return resolved;
  }

  async scratchPath(label: string): Promise<string> {
    const dir = path.join(this.root, "tmp");
    await fs.mkdir(dir, { recursive: true });
    return path.join(dir, `${label}-${randomUUID()}`);
  }

  /** One pipeline: an error in any stream fails it once and is handled. */
  async writeScratch(label: string, source: Readable, ...transforms: Transform[]): Promise<StoredObject & { scratch: string }> {
    const scratch = await this.scratchPath(label);
    const hash = createHash("sha256");
    let sizeBytes = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        hash.update(chunk);
        sizeBytes += chunk.length;
        done(null, chunk);
      },
    });
    try {
      await pipeline([source, ...transforms, meter, createWriteStream(scratch)]);
    } catch (error) {
      await fs.rm(scratch, { force: true });
      throw error;
    }
    return { scratch, sizeBytes, sha256: hash.digest("hex") };
  }

  /** Moves a local file or folder to `key`'s local path, replacing what was there. */
  protected async moveInto(scratch: string, key: string): Promise<void> {
    const target = this.pathOf(key);
    await fs.mkdir(path.dirname(target), { recursive: true });
    const stat = await fs.stat(scratch);
    if (stat.isDirectory()) {
      // rename(2) cannot replace a non-empty directory: move the old one aside first.
      const old = await this.scratchPath("replaced");
      await fs.rename(target, old).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== "ENOENT") throw error;
      });
      await fs.rename(scratch, target);
      await fs.rm(old, { recursive: true, force: true });
    } else {
      await fs.rename(scratch, target);
    }
  }

  /** DATA_DIR is writable: for fs the store itself, for s3 its scratch space. */
  protected async localWritable(): Promise<void> {
    await fs.mkdir(this.root, { recursive: true });
    await fs.access(this.root, fs.constants.W_OK);
  }

  protected localExists(key: string): Promise<boolean> {
    return fs.access(this.pathOf(key)).then(
      () => true,
      () => false,
    );
  }
}

/** Everything under DATA_DIR, which every API replica and worker must then share. */
export class FsArtifactStore extends LocalArea implements ArtifactStore {
  readonly kind = "fs" as const;

  async commit(scratch: string, key: string): Promise<void> {
    await this.moveInto(scratch, key);
  }

  async publish(): Promise<void> {}

  async fetch(key: string): Promise<string> {
    return this.pathOf(key);
  }

  exists(key: string): Promise<boolean> {
    return this.localExists(key);
  }

  read(key: string): Readable {
    return createReadStream(this.pathOf(key));
  }

  async remove(key: string): Promise<void> {
    await fs.rm(this.pathOf(key), { recursive: true, force: true });
  }

  async dropLocal(): Promise<void> {}

  async downloadUrl(): Promise<string | undefined> {
    return undefined;
  }

  ping(): Promise<void> {
    return this.localWritable();
  }
}
