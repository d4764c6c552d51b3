// Trained adapters: metadata, the whole PEFT folder as a reproducible tar.gz whose sha256
// is both Adapter.sha256 and the ETag, and single files named in the adapter's manifest.
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import { archiveKeyOf, packAdapterFolder, type AdapterFile } from "../../common/adapter-archive.ts";
import { AppError, notFound } from "../../common/errors.ts";
import type { Adapter } from "../../common/generated/prisma/client.ts";
import type { AppDeps } from "../deps.ts";
import { afterCursor, newestFirst, page } from "../pagination.ts";
import { tenantOf } from "../plugins/auth.ts";
import { errorResponses, pageOf, pageQuery, uuidParams } from "../schemas.ts";

const adapterView = ({ tenantId: _tenant, storageKey: _key, ...adapter }: Adapter) => ({ ...adapter, sizeBytes: Number(adapter.sizeBytes) });

const manifestOf = (adapter: Adapter): AdapterFile[] => (Array.isArray(adapter.files) ? (adapter.files as unknown as AdapterFile[]) : []);

const binary = { type: "string", format: "binary" } as const;
/** The manifest's files: JSON, the model card (README.md) as Markdown, the rest as bytes. */
const contentTypeOf = (name: string) => (name.endsWith(".json") ? "application/json" : name.endsWith(".md") ? "text/markdown; charset=utf-8" : "application/octet-stream");

/** True when the client already holds this entity tag (RFC 9110 weak comparison). */
function matches(request: FastifyRequest, etag: string): boolean {
  const header = request.headers["if-none-match"];
  if (!header) return false;
  return header.trim() === "*" || header.split(",").some((tag) => tag.trim().replace(/^W\//, "") === etag);
}

function sendFile(request: FastifyRequest, reply: FastifyReply, etag: string, send: () => unknown) {
  reply.header("etag", etag).header("cache-control", "private, max-age=0, must-revalidate");
  if (matches(request, etag)) return reply.code(304).send();
  return send();
}

export type AdapterRoutesOptions = Pick<AppDeps, "prisma" | "store" | "config">;

export const adapterRoutes: FastifyPluginAsync<AdapterRoutesOptions> = async (app, { prisma, store, config }) => {

  async function find(request: FastifyRequest): Promise<Adapter> {
    const { id } = request.params as { id: string };
    const adapter = await prisma.adapter.findFirst({ where: { id, tenantId: tenantOf(request) } });
    if (!adapter) throw notFound("adapter", id);
    return adapter;
  }

  app.get(
    "/v1/adapters",
    { schema: { tags: ["adapters"], summary: "List adapters, newest first", querystring: pageQuery, response: { 200: pageOf("Adapter"), ...errorResponses(400, 401, 429) } } },
    async (request) => {
      const { limit, cursor } = request.query as { limit: string; cursor?: string };
      const rows = await prisma.adapter.findMany({ where: { tenantId: tenantOf(request), ...afterCursor(cursor) }, orderBy: newestFirst, take: Number(limit) + 1 });
      return page(rows, Number(limit), adapterView);
    },
  );

  app.get(
    "/v1/adapters/:id",
    { schema: { tags: ["adapters"], summary: "Get an adapter", params: uuidParams, response: { 200: { $ref: "Adapter#" }, ...errorResponses(400, 401, 404, 429) } } },
    async (request) => adapterView(await find(request)),
  );

  app.get(
    "/v1/adapters/:id/download",
    {
      schema: {
        tags: ["adapters"],
        summary: "The adapter's PEFT folder as tar.gz; ETag is its sha256, If-None-Match answers 304",
        params: uuidParams,
        produces: ["application/gzip"],
        response: { 200: binary, 302: { description: "ARTIFACT_DOWNLOAD=redirect: a presigned URL of the archive", type: "null" }, 304: { type: "null" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request, reply) => {
      const adapter = await find(request);
      let etag = `"${adapter.sha256}"`;
      if (matches(request, etag)) return sendFile(request, reply, etag, () => undefined);
      const archiveKey = archiveKeyOf(adapter.storageKey);
      if (!(await store.exists(archiveKey))) {
        if (!(await store.exists(adapter.storageKey))) throw new AppError(404, "not_found", `the files of adapter ${adapter.id} are gone`);
        const packed = await packAdapterFolder(store, adapter.storageKey);
        if (packed.sha256 !== adapter.sha256) {
          request.log.warn({ adapter: adapter.id, stored: adapter.sha256, packed: packed.sha256 }, "rebuilt adapter archive differs from the recorded sha256");
          etag = `"${packed.sha256}"`;
        }
      }
      const fileName = `adapter-${adapter.id}.tar.gz`;
      // ARTIFACT_DOWNLOAD=redirect: the client fetches the bytes from the object store itself.
      const redirect = config.artifactDownload === "redirect" ? await store.downloadUrl(archiveKey, fileName) : undefined;
      if (redirect) return sendFile(request, reply, etag, () => reply.redirect(redirect, 302));
      return sendFile(request, reply, etag, () =>
        reply
          .type("application/gzip")
          .header("content-disposition", `attachment; filename="${fileName}"`)
          .send(store.read(archiveKey)),
      );
    },
  );

  app.get(
    "/v1/adapters/:id/files/:name",
    {
      schema: {
        tags: ["adapters"],
        summary: "One file of the adapter's PEFT folder; only names in its manifest",
        params: {
          type: "object",
          required: ["id", "name"],
          additionalProperties: false,
          properties: { id: { type: "string", format: "uuid" }, name: { type: "string", maxLength: 255 } },
        },
        produces: ["application/json", "text/markdown", "application/octet-stream"],
        response: { 200: binary, 304: { type: "null" }, ...errorResponses(400, 401, 404, 429) },
      },
    },
    async (request, reply) => {
      const adapter = await find(request);
      const { name } = request.params as { name: string };
      const file = manifestOf(adapter).find((entry) => entry.name === name);
      if (!file || name.includes("/") || name.startsWith(".")) throw notFound(`file ${name} of adapter`, adapter.id);
      const key = `${adapter.storageKey}/${file.name}`;
      if (!(await store.exists(key))) throw new AppError(404, "not_found", `file ${name} of adapter ${adapter.id} is gone`);
      return sendFile(request, reply, `"${file.sha256}"`, () =>
        reply.type(contentTypeOf(name)).send(store.read(key)),
      );
    },
  );
};
