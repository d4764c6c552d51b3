// A worker's local copies of datasets and base models fetched from the artifact store, bounded in
// size: when they exceed WORKER_CACHE_MAX_BYTES the least recently used ones that no running job
// holds are deleted. A dataset is one file; a base model (models/<id>) one folder, one entry.
// With the fs store both are already local (DATA_DIR, MODELS_DIR) and nothing is cached.
import fs from "node:fs/promises";
import path from "node:path";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Logger } from "../common/logger.ts";

/** Bytes of a file, or of every file under a folder. */
async function sizeOf(local: string): Promise<number> {
  const stat = await fs.stat(local);
  if (!stat.isDirectory()) return stat.size;
  let total = 0;
  for (const entry of await fs.readdir(local)) total += await sizeOf(path.join(local, entry));
  return total;
}

interface Entry {
  sizeBytes: number;
  holders: number;
}

export interface CachedCopy {
  path: string;
  release(): void;
}

export class LocalCache {
  /** Least recently used first: a use moves an entry to the end. */
  private readonly entries = new Map<string, Entry>();
  private scanned: Promise<void> | undefined;
  private readonly fetching = new Map<string, Promise<string>>();

  constructor(
    private readonly store: ArtifactStore,
    private readonly maxBytes: number,
    private readonly logger: Logger,
    /** Key prefixes that are cached: their copies outlive a job. */
    private readonly prefixes: string[] = ["datasets/"],
    /** Prefixes whose entries are the folders directly under them (base models). */
    private readonly folderPrefixes: string[] = ["models/"],
  ) {}

  /** The local path of `key`, fetched if needed, held (never evicted) until released. */
  async acquire(key: string): Promise<CachedCopy> {
    if (this.store.kind === "fs") return { path: this.store.pathOf(key), release: () => {} };
    await (this.scanned ??= this.scan());
    let fetch = this.fetching.get(key);
    if (!fetch) {
      fetch = this.store.fetch(key).finally(() => this.fetching.delete(key));
      this.fetching.set(key, fetch);
    }
    const local = await fetch;
    const entry = this.entries.get(key) ?? { sizeBytes: await sizeOf(local), holders: 0 };
    entry.holders += 1;
    this.entries.delete(key);
    this.entries.set(key, entry);
    await this.evict();
    let released = false;
    return {
      path: local,
      release: () => {
        if (released) return;
        released = true;
        entry.holders -= 1;
      },
    };
  }

  get sizeBytes(): number {
    let total = 0;
    for (const entry of this.entries.values()) total += entry.sizeBytes;
    return total;
  }

  /** Keys held locally, least recently used first. */
  keys(): string[] {
    return [...this.entries.keys()];
  }

  private async evict(): Promise<void> {
    let total = this.sizeBytes;
    for (const [key, entry] of this.entries) {
      if (total <= this.maxBytes) return;
      if (entry.holders > 0) continue;
      this.entries.delete(key);
      total -= entry.sizeBytes;
      await this.store.dropLocal(key);
      this.logger.info({ key, sizeBytes: entry.sizeBytes }, "evicted from the local cache");
    }
  }

  /** Copies left by an earlier run of the worker count too, oldest first. */
  private async scan(): Promise<void> {
    const found: { key: string; sizeBytes: number; usedAt: number }[] = [];
    const walk = async (relative: string): Promise<void> => {
      const entries = await fs.readdir(this.store.pathOf(relative), { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        const key = path.posix.join(relative, entry.name);
        if (entry.isDirectory()) await walk(key);
        else if (entry.isFile()) {
          const stat = await fs.stat(this.store.pathOf(key));
          found.push({ key, sizeBytes: stat.size, usedAt: stat.atimeMs });
        }
      }
    };
    for (const prefix of this.prefixes) await walk(prefix.replace(/\/$/, ""));
    for (const prefix of this.folderPrefixes) {
      const folders = await fs.readdir(this.store.pathOf(prefix), { withFileTypes: true }).catch(() => []);
      for (const folder of folders.filter((entry) => entry.isDirectory())) {
        const key = path.posix.join(prefix, folder.name);
        const stat = await fs.stat(this.store.pathOf(key));
        found.push({ key, sizeBytes: await sizeOf(this.store.pathOf(key)), usedAt: stat.atimeMs });
      }
    }
    for (const copy of found.sort((a, b) => a.usedAt - b.usedAt)) this.entries.set(copy.key, { sizeBytes: copy.sizeBytes, holders: 0 });
  }
}
