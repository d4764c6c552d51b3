// Adapters, checkpoints and merged models are written as whole folders: readers never see half of one.
import { mkdir, rename, rm } from "node:fs/promises";

/** Writes into a temporary sibling folder, then renames it into place, so readers never see half a folder. */
export async function writeFolderAtomically(dir: string, write: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await mkdir(tmp, { recursive: true });
  try {
    await write(tmp);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    throw error;
  }
}
