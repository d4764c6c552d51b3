// Errors of the OpenAI-compatible routes in OpenAI's shape, {"error": {"message", "type", "param",
// "code"}}, so its SDKs raise APIError subclasses with our status and code. Same statuses and codes
// as our own API (plugins/errors.ts); never a stack trace.
import type { FastifyError, FastifyInstance } from "fastify";
import { isDatabaseUnavailable } from "../../common/db.ts";
import { AppError } from "../../common/errors.ts";
import { DATABASE_RETRY_AFTER_SECONDS } from "../plugins/errors.ts";

const typeOf = (status: number) =>
  status === 401 ? "authentication_error" : status === 404 ? "invalid_request_error" : status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error";

/** OpenAI names a parameter by its place in the body: "hyperparameters.n_epochs", not "body.hyperparameters.n_epochs". */
const paramOf = (path: string | undefined) => (path ? path.replace(/^(body|querystring|params)\.?/, "") || null : null);

export const openAiError = (status: number, code: string, message: string, param: string | null = null) => ({ error: { message, type: typeOf(status), param, code } });

/** Installs the handler on `app`'s scope: every route registered in it answers errors this way. */
export function useOpenAiErrors(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof AppError) return reply.code(error.status).send(openAiError(error.status, error.code, error.message, paramOf(error.details[0]?.path)));
    if (error.validation) {
      const issue = error.validation[0];
      const missing = issue?.keyword === "required" ? `/${String(issue.params.missingProperty)}` : "";
      const extra = issue?.keyword === "additionalProperties" ? `/${String(issue.params.additionalProperty)}` : "";
      const param = `${issue?.instancePath ?? ""}${missing}${extra}`.replace(/^\//, "").replace(/\//g, ".") || null;
      const message = `${param ?? error.validationContext ?? "request"} ${issue?.message ?? "is invalid"}${extra ? " (not supported)" : ""}`;
      return reply.code(400).send(openAiError(400, "validation_failed", message, param));
    }
    if (isDatabaseUnavailable(error)) {
      request.log.debug({ err: error }, "database unavailable");
      return reply
        .code(503)
        .header("retry-after", String(DATABASE_RETRY_AFTER_SECONDS))
        .send(openAiError(503, "database_unavailable", "the database is unavailable; retry later"));
    }
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    if (status === 500) {
      request.log.error({ err: error }, "unhandled error");
      return reply.code(500).send(openAiError(500, "internal", "internal error; see the server log"));
    }
    const code = status === 413 ? "payload_too_large" : status === 415 ? "unsupported_media_type" : status === 429 ? "rate_limited" : "bad_request";
    return reply.code(status).send(openAiError(status, code, error.message));
  });
}
