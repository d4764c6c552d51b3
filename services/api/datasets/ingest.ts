// Storing and deleting a dataset's bytes, the one way for every upload route (POST /v1/datasets and
// the OpenAI-compatible /v1/files): a JSONL stream is validated, and its quality report made, while it
// goes to a scratch file, then stored content-addressed by sha256 so identical uploads share one file.
import fs from "node:fs/promises";
import type { Readable } from "node:stream";
import { Transform } from "node:stream";
import type { ArtifactStore } from "../../common/artifacts.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import type { Dataset } from "../../common/generated/prisma/client.ts";
import { UNFINISHED_STATUSES } from "../../common/job-status.ts";
import type { QualityThresholds } from "../../trainer/data/quality.ts";
import type { DatasetFormat } from "../../trainer/data/records.ts";
import { JsonlUploadValidator, REPORTED_PROBLEMS } from "./validation.ts";

const storageKeyOf = (sha256: string) => `datasets/${sha256.slice(0, 2)}/${sha256}.jsonl`;
// Serialises the upload and delete of one content hash, so a delete never removes bytes
// that a concurrent upload of the same content has just recorded.
const LOCK_CONTENT = `SELECT pg_advisory_xact_lock(hashtext('dataset:' || $1))`;

/** A validated upload in a scratch file, not yet stored: `keep` stores it, `discard` drops it. */
export interface ValidatedUpload {
  keep(tenantId: string, name: string): Promise<Dataset>;
  discard(): Promise<void>;
}

/**
 * Streams `file` to scratch, validating each line. Throws a 422 (invalid_dataset, empty_dataset)
 * with line numbers when the file is not a dataset; `truncated()` is asked after the stream ends.
 */
export async function validateUpload(
  deps: { prisma: PrismaClient; store: ArtifactStore },
  file: Readable,
  options: { format?: DatasetFormat; maxLineBytes: number; truncated: () => boolean; maxBytes: number; thresholds: QualityThresholds },
): Promise<ValidatedUpload> {
  const validator = new JsonlUploadValidator(options.format, options.maxLineBytes, options.thresholds);
  const validating = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      validator.write(chunk);
      done(null, chunk);
    },
  });
  const stored = await deps.store.writeScratch("upload", file, validating);
  const discard = () => fs.rm(stored.scratch, { force: true });
  if (options.truncated()) {
    await discard();
    throw new AppError(413, "payload_too_large", `uploads are limited to ${options.maxBytes} bytes`);
  }
  const outcome = validator.finish();
  if (!outcome.ok) {
    await discard();
    const shown = outcome.problemCount > REPORTED_PROBLEMS ? ` (showing the first ${REPORTED_PROBLEMS})` : "";
    const empty = outcome.problems[0]?.line === 0;
    throw new AppError(
      422,
      empty ? "empty_dataset" : "invalid_dataset",
      empty ? "the file holds no records" : `${outcome.problemCount} bad line(s)${shown}; nothing was stored`,
      outcome.problems.map((problem) => ({ line: problem.line, message: problem.reason })),
    );
  }
  return {
    discard,
    keep: async (tenantId, name) => {
      const storageKey = storageKeyOf(stored.sha256);
      // The commit runs under the content lock; with the s3 store it is an upload, so the
      // transaction may last as long as that takes (at least 1 MB/s assumed).
      const timeout = 30_000 + Math.ceil(stored.sizeBytes / (1024 * 1024)) * 1000;
      return deps.prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe(LOCK_CONTENT, stored.sha256);
        if (await deps.store.exists(storageKey)) await discard();
        else await deps.store.commit(stored.scratch, storageKey);
        return tx.dataset.create({
          data: { tenantId, name, format: outcome.format, rows: outcome.rows, sizeBytes: BigInt(stored.sizeBytes), sha256: stored.sha256, storageKey, stats: outcome.stats as object, qualityReport: outcome.qualityReport as object },
        });
      }, { timeout });
    },
  };
}

/** The thresholds a report marks blocking findings by, from the configuration. */
export const qualityThresholdsOf = (config: { dataQualityMaxLeakagePercent: number; dataQualityMaxLabelConflicts: number }): QualityThresholds => ({
  maxLeakagePercent: config.dataQualityMaxLeakagePercent,
  maxLabelConflicts: config.dataQualityMaxLabelConflicts,
});

/** Soft-deletes a live dataset; 409 dataset_in_use while an unfinished job reads it. Its bytes go once no live dataset shares them. */
export async function deleteDataset(deps: { prisma: PrismaClient; store: ArtifactStore }, row: Dataset): Promise<void> {
  await deps.prisma.$transaction(async (tx) => {
    await tx.$executeRawUnsafe(LOCK_CONTENT, row.sha256);
    const inUse = await tx.job.findFirst({
      where: { status: { in: [...UNFINISHED_STATUSES] }, OR: [{ trainDatasetId: row.id }, { validationDatasetId: row.id }] },
      select: { id: true },
    });
    if (inUse) throw new AppError(409, "dataset_in_use", `dataset ${row.id} is used by job ${inUse.id}, which has not finished`);
    await tx.dataset.update({ where: { id: row.id }, data: { deletedAt: new Date() } });
    const sharers = await tx.dataset.count({ where: { sha256: row.sha256, deletedAt: null } });
    if (sharers === 0) await deps.store.remove(row.storageKey);
  });
}
