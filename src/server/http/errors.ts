/** One mapping from errors to `{"error": {code, message}}` responses (codes: base/errors.ts). */
import type { FastifyError, FastifyReply, FastifyRequest } from "fastify";
import { DeltaError, ErrorCodes } from "../../base/errors.ts";

const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, "E_TOO_LARGE"],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, "E_MEDIA_TYPE"],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, "E_INVALID"],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, "E_INVALID"],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, "E_INVALID"],
};

export interface ErrorPayload {
  status: number;
  body: { error: { code: string; message: string; committed?: number }; committed?: number };
}

export function toErrorPayload(err: unknown): ErrorPayload {
  if (err instanceof DeltaError) {
    const status = (ErrorCodes as Record<string, number>)[err.code] ?? 500;
    const committed = typeof err.details?.committed === "number" ? err.details.committed : undefined;
    const error = { code: err.code, message: err.message, ...(committed === undefined ? {} : { committed }) };
    return { status, body: committed === undefined ? { error } : { error, committed } };
  }
  const fe = err as Partial<FastifyError> & { validation?: unknown };
  if (fe.validation) return { status: 400, body: { error: { code: "E_INVALID", message: fe.message ?? "invalid request" } } };
  const mapped = fe.code ? FASTIFY_CODES[fe.code] : undefined;
  if (mapped) return { status: mapped[0], body: { error: { code: mapped[1], message: fe.message ?? mapped[1] } } };
  if (err instanceof SyntaxError || fe.statusCode === 400) return { status: 400, body: { error: { code: "E_INVALID", message: fe.message ?? "invalid request" } } };
  if (fe.statusCode === 413) return { status: 413, body: { error: { code: "E_TOO_LARGE", message: fe.message ?? "too large" } } };
  if (fe.statusCode === 404) return { status: 404, body: { error: { code: "E_NOT_FOUND", message: fe.message ?? "not found" } } };
  if (typeof fe.statusCode === "number" && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, body: { error: { code: "E_INVALID", message: fe.message ?? "invalid request" } } };
  }
  return { status: 500, body: { error: { code: "E_INTERNAL", message: "internal error" } } };
}

export function sendError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const { status, body } = toErrorPayload(err);
  if (status >= 500) req.log.error({ err }, "request failed");
  if (status === 413 && !(err instanceof DeltaError && err.code === "E_LOG_LIMIT")) reply.header("connection", "close");
  return reply.code(status).type("application/json").send(body);
}
