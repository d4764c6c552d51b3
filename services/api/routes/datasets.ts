// Datasets: JSONL uploads validated (and their quality report made) while they stream to a scratch
// file, then stored content-addressed by sha256 (datasets/ingest.ts, shared with /v1/files).
import multipart from "@fastify/multipart";
import type { FastifyPluginAsync } from "fastify";
import { AppError, notFound } from "../../common/errors.ts";
import type { Dataset } from "../../common/generated/prisma/client.ts";
import { DATASET_FORMATS, type DatasetFormat } from "../../trainer/data/records.ts";
import type { AppDeps } from "../deps.ts";
import type { DataQualityPreflight } from "../data-quality.ts";
import { deleteDataset, qualityThresholdsOf, validateUpload } from "../datasets/ingest.ts";
import { afterCursor, newestFirst, page } from "../pagination.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, pageOf, pageQuery, uuidParams } from "../schemas.ts";

/** Slack for multipart boundaries and headers when judging Content-Length against the limit. */
const MULTIPART_OVERHEAD_BYTES = 64 * 1024;

const datasetView = (row: Dataset) => ({ ...row, sizeBytes: Number(row.sizeBytes) });

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

export type DatasetRoutesOptions = Pick<AppDeps, "prisma" | "store" | "config"> & { preflight: DataQualityPreflight };

export const datasetRoutes: FastifyPluginAsync<DatasetRoutesOptions> = async (app, { prisma, store, config, preflight }) => {
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

      const upload = await validateUpload({ prisma, store }, part.file, {
        format: format as DatasetFormat | undefined,
        maxLineBytes: config.maxDatasetLineBytes,
        truncated: () => part.file.truncated,
        maxBytes: config.maxUploadBytes,
        thresholds: qualityThresholdsOf(config),
      }).catch(asMalformedMultipart);
      const row = await upload.keep(tenantOf(request), name);
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

  app.get(
    "/v1/datasets/:id/quality",
    {
      schema: {
        tags: ["datasets"],
        summary: "The dataset's quality report (made at upload; for an older upload, made now and kept)",
        params: uuidParams,
        response: { 200: { $ref: "QualityReport#" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request) => {
      const { id } = request.params as { id: string };
      const row = await prisma.dataset.findFirst({ where: { id, tenantId: tenantOf(request), deletedAt: null } });
      if (!row) throw notFound("dataset", id);
      if (row.qualityReport) return row.qualityReport;
      const report = await preflight.uploadReport(row);
      await prisma.dataset.update({ where: { id }, data: { qualityReport: report as object } });
      return report;
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
      await deleteDataset({ prisma, store }, row);
      return reply.code(204).send();
    },
  );
};
