/** The Fastify instance: strict validation, body limits, raw octet-stream bodies, one error mapping. */
import Fastify, { LogController, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { sendError } from "./errors.ts";
import { lazyValidatorCompiler } from "./lazy-validators.ts";
import { lazyChildLogger } from "./lazy-request-logger.ts";
import type { ServerMetrics } from "./metrics.ts";

/** In place of Fastify's default compiler builders; a route with a response schema would reach it (and fail to register). */
function notUsed(): never {
  throw new Error("Fastify's default schema compilers are left out: routes take no response schema (src/server/http/app.ts)");
}

export function buildApp(opts: { logger: Logger | undefined; jsonBodyLimitBytes: number; metrics: ServerMetrics | null }): FastifyInstance {
  const app: FastifyInstance = Fastify({
    ...(opts.logger ? { loggerInstance: opts.logger } : { logger: false }),
    logController: new LogController({ disableRequestLogging: true }),
    childLoggerFactory: lazyChildLogger,
    bodyLimit: opts.jsonBodyLimitBytes,
    return503OnClosing: true,
    forceCloseConnections: "idle",
    // Fastify's default compilers are never used: the validator compiler is ours (below) and no
    // route has a response schema. Placeholders, so that it neither builds nor loads them
    // (@fastify/ajv-compiler, fast-json-stringify) on every start.
    schemaController: { compilersFactory: { buildValidator: notUsed, buildSerializer: notUsed } },
  }) as unknown as FastifyInstance;
  // Strict validation (no coercion, defaults or removal), compiled on a route's first request.
  app.setValidatorCompiler(lazyValidatorCompiler());
  // Log chunks, artifact and source uploads arrive as streams; each route caps and consumes its own.
  // JSON endpoints take JSON only: anything else is 415, never a string that reaches validation.
  app.removeContentTypeParser("text/plain");
  app.addContentTypeParser("application/octet-stream", (_req, payload, done) => done(null, payload));
  // An empty (or blank) JSON body is `{}`: optional bodies (cancel) may be left out whatever the
  // Content-Type; required ones then fail validation with a message that names what is missing.
  const json = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (req, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text.trim() === "") return done(null, {});
    void json(req, text, done);
  });
  app.setErrorHandler((err, req, reply) => sendError(req, reply, err));
  app.setNotFoundHandler((req, reply) => sendError(req, reply, Object.assign(new Error(`no route ${req.method} ${req.url.split("?")[0]}`), { statusCode: 404 })));
  const m = opts.metrics;
  if (m) {
    app.addHook("onResponse", (req, reply, done) => {
      m.observeRequest(req.method, req.routeOptions.url ?? "unmatched", reply.statusCode, reply.elapsedTime / 1000);
      done();
    });
  }
  return app;
}
