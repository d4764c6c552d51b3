// The downloadable form of an adapter: a tar.gz of its PEFT folder, built byte for byte
// reproducibly (sorted names, fixed times and owners), so the sha256 stored on the Adapter
// row is the sha256 of exactly the bytes served and is the download's ETag. The worker
// packs the folder when a job succeeds; the API rebuilds the archive if it is missing, and streams
// a checkpoint's adapter in the same form.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { PassThrough } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import tar from "tar-stream";
import type { ArtifactStore } from "./artifacts.ts";

export interface AdapterFile {
  name: string;
  sizeBytes: number;
  sha256: string;
}

export interface PackedAdapter {
  /** Artifact key of the tar.gz, next to the folder. */
  archiveKey: string;
  sizeBytes: number;
  sha256: string;
  /** The manifest stored in Adapter.files: only these names are served one by one. */
  files: AdapterFile[];
}

export const archiveKeyOf = (storageKey: string) => `${storageKey}.tar.gz`;

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** Packs the flat PEFT folder at `storageKey` into `${storageKey}.tar.gz` (from its local copy, fetched if needed). */
export async function packAdapterFolder(store: ArtifactStore, storageKey: string): Promise<PackedAdapter> {
  const folder = await store.fetch(storageKey);
  const entries = await fs.readdir(folder, { withFileTypes: true });
  const names = entries.filter((entry) => entry.isFile()).map((entry) => entry.name).sort();
  const files: AdapterFile[] = [];
  for (const name of names) {
    const stat = await fs.stat(path.join(folder, name));
    files.push({ name, sizeBytes: stat.size, sha256: await sha256OfFile(path.join(folder, name)) });
  }
  const output = new PassThrough();
  const written = store.writeScratch("adapter-archive", output);
  // Awaited together: a failure in either must not leave the other's rejection unhandled.
  const [, { scratch, sha256, sizeBytes }] = await Promise.all([writeArchive(folder, files, output), written]);
  const archiveKey = archiveKeyOf(storageKey);
  await store.commit(scratch, archiveKey);
  return { archiveKey, sha256, sizeBytes, files };
}

/** Writes the reproducible tar.gz of `files` (sorted, in `folder`) into `output`. */
async function writeArchive(folder: string, files: Pick<AdapterFile, "name" | "sizeBytes">[], output: NodeJS.WritableStream): Promise<void> {
  const pack = tar.pack();
  const gzipped = pipeline(pack, createGzip({ level: 9 }), output);
  const added = (async () => {
    for (const file of files) {
      const entry = pack.entry({ name: file.name, size: file.sizeBytes, mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, uname: "", gname: "" });
      await pipeline(createReadStream(path.join(folder, file.name)), entry);
    }
    pack.finalize();
  })().catch((error: unknown) => {
    pack.destroy(error as Error);
    throw error;
  });
  await Promise.all([added, gzipped]);
}

/** What a checkpoint folder holds besides its PEFT adapter: the optimizer's state, for resuming only. */
export const RESUME_ONLY_FILES = ["optimizer.safetensors", "trainer_state.json"];

/**
 * A checkpoint folder's PEFT adapter (adapter_config.json, adapter_model.safetensors, metrics.json)
 * as the same reproducible tar.gz a finished adapter downloads as, streamed; undefined when the
 * folder is gone.
 */
export async function checkpointArchive(folder: string): Promise<PassThrough | undefined> {
  const entries = await fs.readdir(folder, { withFileTypes: true }).catch(() => undefined);
  if (!entries) return undefined;
  const names = entries.filter((entry) => entry.isFile() && !RESUME_ONLY_FILES.includes(entry.name)).map((entry) => entry.name).sort();
  const files = await Promise.all(names.map(async (name) => ({ name, sizeBytes: (await fs.stat(path.join(folder, name))).size })));
  const output = new PassThrough();
  writeArchive(folder, files, output).catch((error: Error) => output.destroy(error));
  return output;
}
