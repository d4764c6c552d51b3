// Datasets: JSONL uploads validated while they stream to a scratch file, then stored
// content-addressed by sha256, so identical uploads share one file.
import fs from "node:fs/promises";
import { Transform } from "node:stream";
import multipart from "@fastify/multipart";
import type { FastifyPluginAsync } from "fastify";
import { AppError, notFound } from "../../common/errors.ts";
import type { Dataset } from "../../common/generated/prisma/client.ts";
import { DATASET_FORMATS, type DatasetFormat } from "../../trainer/data/records.ts";
import type { AppDeps } from "../deps.ts";
import { JsonlUploadValidator, REPORTED_PROBLEMS } from "../datasets/validation.ts";
import { afterCursor, newestFirst, page } from "../pagination.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, pageOf, pageQuery, uuidParams } from "../schemas.ts";
import { UNFINISHED_STATUSES } from "../../common/job-status.ts";

/** Slack for multipart boundaries and headers when judging Content-Length against the limit. */
const MULTIPART_OVERHEAD_BYTES = 64 * 1024;

const datasetView = (row: Dataset) => ({ ...row, sizeBytes: Number(row.sizeBytes) });
const storageKeyOf = (sha256: string) => `datasets/${sha256.slice(0, 2)}/${sha256}.jsonl`;
// Serialises the upload and delete of one content hash, so a delete never removes bytes
// that a concurrent upload of the same content has just recorded.
const LOCK_CONTENT = `SELECT pg_advisory_xact_lock(hashtext('dataset:' || $1))`;

const uploadBody = {
  type: "object",
  required: ["file"],
  properties: {
    format: { type: "string", enum: [...DATASET_FORMATS], description: "declared format; detected from the first record when absent. Send before the file." },
    name: { type: "string", maxLength: 200, description: "defaults to the file name. Send before the file." },
    file: { type: "string", format: "binary", description: "JSONL, one record per line" },
  },
} as const;

/**
 * busboy reports a multipart body it cannot parse (no boundary, cut off before the closing
 * boundary) as a plain Error: that is the client's 400. Errors that carry a status or a system
 * code (a full disk) keep their own meaning.
 */
function asMalformedMultipart(error: unknown): never {
  if (error instanceof AppError || (error as { statusCode?: number }).statusCode || (error as { code?: string }).code) throw error;
  throw new AppError(400, "invalid_body", `malformed multipart body: ${(error as Error).message}`);
}

export type DatasetRoutesOptions = Pick<AppDeps, "prisma" | "store" | "config">;

export const datasetRoutes: FastifyPluginAsync<DatasetRoutesOptions> = async (app, { prisma, store, config }) => {
  // Registered inside this plugin's own scope: only the dataset routes take uploads, and
  // multipart's hooks would otherwise run on every /v1 request.
  await app.register(multipart);

  app.post(
    "/v1/datasets",
    {
      schema: {
        tags: ["datasets"],
        summary: "Upload a JSONL dataset (multipart/form-data)",
        consumes: ["multipart/form-data"],
        body: uploadBody,
        response: { 201: { $ref: "Dataset#" }, ...errorResponses(400, 401, 413, 415, 422, 429) },
      },
      // The multipart stream is read by the handler; the body schema above documents it.
      validatorCompiler: () => () => true,
    },
    async (request, reply) => {
      const declaredLength = Number(request.headers["content-length"] ?? 0);
      if (declaredLength > config.maxUploadBytes + MULTIPART_OVERHEAD_BYTES) {
        throw new AppError(413, "payload_too_large", `uploads are limited to ${config.maxUploadBytes} bytes`);
      }
      if (!request.isMultipart()) throw new AppError(415, "unsupported_media_type", "upload the file as multipart/form-data");
      const part = await request
        .file({ limits: { fileSize: config.maxUploadBytes, files: 1, fields: 4, fieldSize: 1024 }, throwFileSizeLimit: false })
        .catch(asMalformedMultipart);
      if (!part) throw new AppError(400, "missing_file", "the multipart body has no file part");
      const fieldValue = (name: string): string | undefined => {
        const field = part.fields[name];
        return field && !Array.isArray(field) && field.type === "field" ? String(field.value) : undefined;
      };
      const format = fieldValue("format");
      if (format !== undefined && !DATASET_FORMATS.includes(format as DatasetFormat)) {
        part.file.resume();
        throw new AppError(400, "validation_failed", "unknown dataset format", [{ path: "body.format", message: `must be one of ${DATASET_FORMATS.join(", ")}` }]);
      }
      const name = (fieldValue("name") ?? part.filename ?? "dataset.jsonl").slice(0, 200);

      const validator = new JsonlUploadValidator(format as DatasetFormat | undefined, config.maxDatasetLineBytes);
      const validating = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          validator.write(chunk);
          done(null, chunk);
        },
      });
      const stored = await store.writeScratch("upload", part.file, validating).catch(asMalformedMultipart);
      const discard = () => fs.rm(stored.scratch, { force: true });
      if (part.file.truncated) {
        await discard();
        throw new AppError(413, "payload_too_large", `uploads are limited to ${config.maxUploadBytes} bytes`);
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

      const storageKey = storageKeyOf(stored.sha256);
      // The commit runs under the content lock; with the s3 store it is an upload, so the
      // transaction may last as long as that takes (at least 1 MB/s assumed).
      const transactionTimeout = 30_000 + Math.ceil(stored.sizeBytes / (1024 * 1024)) * 1000;
      const row = await prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe(LOCK_CONTENT, stored.sha256);
        if (await store.exists(storageKey)) await discard();
        else await store.commit(stored.scratch, storageKey);
        return tx.dataset.create({
          data: {
            tenantId: tenantOf(request),
            name,
            format: outcome.format,
            rows: outcome.rows,
            sizeBytes: BigInt(stored.sizeBytes),
            sha256: stored.sha256,
            storageKey,
            stats: outcome.stats as object,
          },
        });
      }, { timeout: transactionTimeout });
      return reply.code(201).send(datasetView(row));
    },
  );

  app.get(
    "/v1/datasets",
    { schema: { tags: ["datasets"], summary: "List datasets, newest first", querystring: pageQuery, response: { 200: pageOf("Dataset"), ...errorResponses(400, 401, 429) } } },
    async (request) => {
      const { limit, cursor } = request.query as { limit: string; cursor?: string };
      const rows = await prisma.dataset.findMany({
        where: { tenantId: tenantOf(request), deletedAt: null, ...afterCursor(cursor) },
        orderBy: newestFirst,
        take: Number(limit) + 1,
      });
      return page(rows, Number(limit), datasetView);
    },
  );

  app.get(
    "/v1/datasets/:id",
    { schema: { tags: ["datasets"], summary: "Get a dataset", params: uuidParams, response: { 200: { $ref: "Dataset#" }, ...errorResponses(400, 401, 404, 429) } } },
    async (request) => {
      const { id } = request.params as { id: string };
      const row = await prisma.dataset.findFirst({ where: { id, tenantId: tenantOf(request), deletedAt: null } });
      if (!row) throw notFound("dataset", id);
      return datasetView(row);
    },
  );

  app.delete(
    "/v1/datasets/:id",
    {
      schema: {
        tags: ["datasets"],
        summary: "Delete a dataset (409 while a queued or running job uses it)",
        params: uuidParams,
        response: { 204: { type: "null" }, ...errorResponses(400, 401, 404, 409, 429) },
      },
    },
    async (request, reply) => {
      const { id } = request.params as { id: string };
      const tenantId = tenantOf(request);
      const row = await prisma.dataset.findFirst({ where: { id, tenantId, deletedAt: null } });
      if (!row) throw notFound("dataset", id);
      await prisma.$transaction(async (tx) => {
        await tx.$executeRawUnsafe(LOCK_CONTENT, row.sha256);
        const inUse = await tx.job.findFirst({
          where: { status: { in: [...UNFINISHED_STATUSES] }, OR: [{ trainDatasetId: id }, { validationDatasetId: id }] },
          select: { id: true },
        });
        if (inUse) throw new AppError(409, "dataset_in_use", `dataset ${id} is used by job ${inUse.id}, which has not finished`);
        await tx.dataset.update({ where: { id }, data: { deletedAt: new Date() } });
        const sharers = await tx.dataset.count({ where: { sha256: row.sha256, deletedAt: null } });
        if (sharers === 0) await store.remove(row.storageKey);
      });
      return reply.code(204).send();
    },
  );
};
