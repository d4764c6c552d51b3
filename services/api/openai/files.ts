// OpenAI's /v1/files for fine-tuning data, over our datasets: an upload with purpose "fine-tune"
// is validated and stored exactly as POST /v1/datasets stores it (chat, prompt/completion or our
// classification JSONL), and a file id is `file-<dataset id>`.
import multipart from "@fastify/multipart";
import type { FastifyInstance } from "fastify";
import type { ArtifactStore } from "../../common/artifacts.ts";
import type { Config } from "../../common/config.ts";
import type { PrismaClient } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import { deleteDataset, qualityThresholdsOf, validateUpload, type ValidatedUpload } from "../datasets/ingest.ts";
import { tenantOf } from "../plugins/auth.ts";
import { FILE_PREFIX, fileObject, limitOf, listPage, uuidOf } from "./shapes.ts";

export interface OpenAiFilesOptions {
  prisma: PrismaClient;
  store: ArtifactStore;
  config: Config;
}

const MAX_LIST = 10_000;

export async function openAiFileRoutes(app: FastifyInstance, deps: OpenAiFilesOptions): Promise<void> {
  const { prisma, store, config } = deps;
  await app.register(multipart);

  const liveFile = async (tenantId: string, fileId: string) => {
    const id = uuidOf(fileId, FILE_PREFIX, "file");
    const row = await prisma.dataset.findFirst({ where: { id, tenantId, deletedAt: null } });
    if (!row) throw new AppError(404, "not_found", `no file ${fileId}`);
    return row;
  };

  app.post("/v1/files", { schema: { hide: true } }, async (request) => {
    if (!request.isMultipart()) throw new AppError(415, "unsupported_media_type", "upload the file as multipart/form-data");
    // OpenAI's SDK may send `purpose` after the file: read every part, keep the file validated in scratch until the end.
    let upload: ValidatedUpload | undefined;
    let filename = "dataset.jsonl";
    let purpose: string | undefined;
    try {
      for await (const part of request.parts({ limits: { fileSize: config.maxUploadBytes, files: 1, fields: 4, fieldSize: 1024 } })) {
        if (part.type === "field") {
          if (part.fieldname === "purpose") purpose = String(part.value);
          continue;
        }
        filename = (part.filename || filename).slice(0, 200);
        upload = await validateUpload(deps, part.file, {
          maxLineBytes: config.maxDatasetLineBytes,
          truncated: () => part.file.truncated,
          maxBytes: config.maxUploadBytes,
          thresholds: qualityThresholdsOf(config),
        });
      }
      if (!upload) throw new AppError(400, "missing_file", "the multipart body has no file part", [{ path: "file", message: "required" }]);
      if (purpose !== "fine-tune") {
        throw new AppError(400, "unsupported_purpose", `only purpose "fine-tune" is supported, got ${JSON.stringify(purpose ?? null)}`, [{ path: "purpose", message: "must be fine-tune" }]);
      }
    } catch (error) {
      await upload?.discard();
      if (error instanceof AppError || (error as { statusCode?: number }).statusCode || (error as { code?: string }).code) throw error;
      throw new AppError(400, "invalid_body", `malformed multipart body: ${(error as Error).message}`);
    }
    return fileObject(await upload.keep(tenantOf(request), filename));
  });

  app.get("/v1/files", { schema: { hide: true } }, async (request) => {
    const query = request.query as { after?: string; limit?: string; order?: string; purpose?: string };
    const limit = limitOf(query.limit, MAX_LIST, MAX_LIST);
    if (query.order !== undefined && query.order !== "asc" && query.order !== "desc") throw new AppError(400, "invalid_order", "order must be asc or desc", [{ path: "order", message: "asc or desc" }]);
    const tenantId = tenantOf(request);
    if (query.purpose !== undefined && query.purpose !== "fine-tune") return listPage([], limit);
    const direction = query.order === "asc" ? "asc" : "desc";
    const after = query.after !== undefined ? await liveFile(tenantId, query.after) : undefined;
    const beyond = direction === "desc" ? "lt" : "gt";
    const rows = await prisma.dataset.findMany({
      where: {
        tenantId,
        deletedAt: null,
        ...(after ? { OR: [{ createdAt: { [beyond]: after.createdAt } }, { createdAt: after.createdAt, id: { [beyond]: after.id } }] } : {}),
      },
      orderBy: [{ createdAt: direction }, { id: direction }],
      take: limit + 1,
    });
    return listPage(rows.map(fileObject), limit);
  });

  app.get("/v1/files/:fileId", { schema: { hide: true } }, async (request) => {
    return fileObject(await liveFile(tenantOf(request), (request.params as { fileId: string }).fileId));
  });

  app.get("/v1/files/:fileId/content", { schema: { hide: true } }, async (request, reply) => {
    const row = await liveFile(tenantOf(request), (request.params as { fileId: string }).fileId);
    return reply.type("application/octet-stream").header("content-length", String(row.sizeBytes)).send(store.read(row.storageKey));
  });

  app.delete("/v1/files/:fileId", { schema: { hide: true } }, async (request) => {
    const fileId = (request.params as { fileId: string }).fileId;
    const row = await liveFile(tenantOf(request), fileId);
    await deleteDataset(deps, row);
    return { id: `${FILE_PREFIX}${row.id}`, object: "file" as const, deleted: true };
  });
}
