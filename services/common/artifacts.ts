// Filesystem artifact store under DATA_DIR. Everything is written to a temporary path
// on the same filesystem and renamed into place, so no reader ever sees half a file.
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

export class ArtifactStore {
  constructor(readonly root: string) {}

  /** Absolute path of a key; keys are relative, slash-separated and never leave the root. */
  pathOf(key: string): string {
    const resolved = path.resolve(this.root, key);
    if (!resolved.startsWith(path.resolve(this.root) + path.sep)) throw new Error(`invalid artifact key: ${key}`);
    return resolved;
  }

  /** A fresh path on the store's filesystem for building something before `commit*`. */
  async scratchPath(label: string): Promise<string> {
    const dir = path.join(this.root, "tmp");
    await fs.mkdir(dir, { recursive: true });
    return path.join(dir, `${label}-${randomUUID()}`);
  }

  /**
   * Streams `source` through `transforms` into a scratch file, hashing on the way; returns the
   * scratch path and digest. One pipeline: an error in any stream fails it once and is handled.
   */
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

  /** Moves a finished scratch file or folder to `key`, replacing what was there. */
  async commit(scratch: string, key: string): Promise<void> {
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

  async exists(key: string): Promise<boolean> {
    return fs.access(this.pathOf(key)).then(
      () => true,
      () => false,
    );
  }

  read(key: string): Readable {
    return createReadStream(this.pathOf(key));
  }

  async remove(key: string): Promise<void> {
    await fs.rm(this.pathOf(key), { recursive: true, force: true });
  }
}
