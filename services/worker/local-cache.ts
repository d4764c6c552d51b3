// A worker's local copies of datasets fetched from the artifact store, bounded in size: when
// they exceed WORKER_CACHE_MAX_BYTES the least recently used ones that no running job holds are
// deleted. With the fs store the datasets are already local and nothing is cached or evicted.
import fs from "node:fs/promises";
import path from "node:path";
import type { ArtifactStore } from "../common/artifacts.ts";
import type { Logger } from "../common/logger.ts";

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
    const entry = this.entries.get(key) ?? { sizeBytes: (await fs.stat(local)).size, holders: 0 };
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
    for (const copy of found.sort((a, b) => a.usedAt - b.usedAt)) this.entries.set(copy.key, { sizeBytes: copy.sizeBytes, holders: 0 });
  }
}
