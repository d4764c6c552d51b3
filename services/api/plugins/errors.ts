// Every error leaves the API as {"error": {"code", "message", "details"}}; clients never
// see a stack trace, and anything unexpected is logged with the request id.
import type { FastifyError, FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import { isDatabaseUnavailable } from "../../common/db.ts";
import { AppError, type ErrorDetail } from "../../common/errors.ts";

/** What a client is told to wait before retrying while Postgres is unreachable or restarting. */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

export const errorResponseSchema = {
  $id: "ErrorResponse",
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string" },
        message: { type: "string" },
        details: {
          type: "array",
          items: {
            type: "object",
            properties: { path: { type: "string" }, line: { type: "integer" }, message: { type: "string" } },
          },
        },
      },
    },
  },
} as const;

const FASTIFY_CODES: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: "payload_too_large" },
  FST_REQ_FILE_TOO_LARGE: { status: 413, code: "payload_too_large" },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: "unsupported_media_type" },
  FST_INVALID_MULTIPART_CONTENT_TYPE: { status: 415, code: "unsupported_media_type" },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: "invalid_body" },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: "invalid_json" },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: "invalid_body" },
  FST_PARTS_LIMIT: { status: 413, code: "payload_too_large" },
  FST_FILES_LIMIT: { status: 413, code: "payload_too_large" },
  FST_FIELDS_LIMIT: { status: 413, code: "payload_too_large" },
};

function validationDetails(error: FastifyError): ErrorDetail[] {
  return (error.validation ?? []).map((issue) => {
    const missing = issue.keyword === "required" ? `/${String(issue.params.missingProperty)}` : "";
    const extra = issue.keyword === "additionalProperties" ? `/${String(issue.params.additionalProperty)}` : "";
    const where = `${error.validationContext ?? "body"}${issue.instancePath}${missing}${extra}`;
    return { path: where.replace(/\//g, "."), message: issue.message ?? "is invalid" };
  });
}

export const errorsPlugin = fp(async (app: FastifyInstance) => {
  app.addSchema(errorResponseSchema);

  app.setNotFoundHandler((request, reply) => {
    reply.code(404).send({ error: { code: "route_not_found", message: `no route ${request.method} ${request.url}`, details: [] } });
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof AppError) {
      return reply.code(error.status).send({ error: { code: error.code, message: error.message, details: error.details } });
    }
    if (error.validation) {
      return reply.code(400).send({
        error: { code: "validation_failed", message: "the request is invalid", details: validationDetails(error) },
      });
    }
    const known = error.code ? FASTIFY_CODES[error.code] : undefined;
    if (known) {
      return reply.code(known.status).send({ error: { code: known.code, message: error.message, details: [] } });
    }
    if (error.statusCode === 429) {
      return reply.code(429).send({ error: { code: "rate_limited", message: error.message, details: [] } });
    }
    if (error.statusCode && error.statusCode >= 400 && error.statusCode < 500) {
      return reply.code(error.statusCode).send({ error: { code: "bad_request", message: error.message, details: [] } });
    }
    if (isDatabaseUnavailable(error)) {
      // The pools log the outage itself once; a line per request would flood the log.
      request.log.debug({ err: error }, "database unavailable");
      return reply
        .code(503)
        .header("retry-after", String(DATABASE_RETRY_AFTER_SECONDS))
        .send({ error: { code: "database_unavailable", message: "the database is unavailable; retry later", details: [] } });
    }
    request.log.error({ err: error }, "unhandled error");
    return reply.code(500).send({ error: { code: "internal", message: "internal error; see the server log", details: [] } });
  });
});
