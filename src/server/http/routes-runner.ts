/** `/v1/runner/*`: register, lease, heartbeat, log, complete, cancel-ack, source (PROTOCOL.md). */
import type { FastifyInstance, FastifyRequest } from "fastify";
import { DeltaError } from "../../base/errors.ts";
import { hashToken } from "../../base/ids.ts";
import { CompleteRequest, HeartbeatRequest, LeaseRequest, RegisterRequest } from "../../protocol/schemas.ts";
import type { BlobStore } from "../blobs/blob-store.ts";
import { fencedAttempt } from "../engine/lease-fence.ts";
import type { EngineContext } from "../engine/context.ts";
import { appendLog, parseContentRange } from "../engine/log-ops.ts";
import { cancelAck, complete, heartbeat, lease, register } from "../engine/runner-ops.ts";
import { bearerOfKind } from "./auth.ts";
import { checkContentLength, clientGone, lazyClientGone, rawBody, readCappedParts } from "./common.ts";

/** onRequest hook of the routes a lease token opens: 401 for a token the store does not know. */
export function leaseTokenHook(ctx: EngineContext): (req: FastifyRequest) => Promise<void> {
  return async (req) => {
    const t = bearerOfKind(req, "lease");
    const hash = hashToken(t);
    if (!ctx.knownTokens.valid(hash, 0)) {
      if (!(await ctx.store.getAttemptByLeaseHash(hash))) throw new DeltaError("E_TOKEN_INVALID", "lease token is unknown");
      ctx.knownTokens.add(hash, Infinity);
    }
    req.deltaTokenHash = hash;
  };
}

export function runnerRoutes(app: FastifyInstance, ctx: EngineContext, blobs: BlobStore): void {
  const { store } = ctx;
  const regAuth = async (req: FastifyRequest) => {
    const t = bearerOfKind(req, "registration");
    const hash = hashToken(t);
    const reg = await store.getRegistration(hash);
    if (!reg || reg.usedAt !== null || reg.expiresAt <= ctx.clock.now()) throw new DeltaError("E_TOKEN_INVALID", "registration token is unknown, used or expired");
    req.deltaTokenHash = hash;
  };
  const sessionAuth = async (req: FastifyRequest) => {
    const t = bearerOfKind(req, "session");
    const hash = hashToken(t);
    if (!ctx.knownTokens.valid(hash, ctx.clock.now())) {
      const r = await store.getRunnerBySession(hash);
      if (!r || r.sessionExpiresAt <= ctx.clock.now()) throw new DeltaError("E_TOKEN_INVALID", "session token is unknown or expired");
      ctx.knownTokens.add(hash, r.sessionExpiresAt);
    }
    req.deltaTokenHash = hash;
  };
  const leaseAuth = leaseTokenHook(ctx);
  // A request that cannot wait needs no abort signal (an AbortController and a close listener per request).
  const neverAborted = new AbortController().signal;

  app.post<{ Body: RegisterRequest }>("/v1/runner/register", { schema: { body: RegisterRequest }, onRequest: regAuth }, async (req, reply) => {
    return reply.code(201).send(await register(ctx, req.deltaTokenHash, req.body));
  });

  app.post<{ Body: LeaseRequest }>("/v1/runner/lease", { schema: { body: LeaseRequest }, onRequest: sessionAuth }, async (req, reply) => {
    const l = await lease(ctx, req.deltaTokenHash, req.body.waitMs, req.body.waitMs > 0 ? clientGone(reply) : neverAborted);
    if (!l) return reply.code(204).send();
    return reply.code(200).send({ lease: l });
  });

  app.post<{ Body: HeartbeatRequest }>("/v1/runner/heartbeat", { schema: { body: HeartbeatRequest }, onRequest: leaseAuth }, async (req, reply) => {
    return reply.code(200).send(await heartbeat(ctx, req.deltaTokenHash, req.body, (req.body.waitMs ?? 0) > 0 ? clientGone(reply) : neverAborted));
  });

  app.put("/v1/runner/log", { onRequest: leaseAuth }, async (req, reply) => {
    const range = parseContentRange(req.headers["content-range"]);
    checkContentLength(req, ctx.opts.logChunkLimitBytes);
    const body = await readCappedParts(rawBody(req), ctx.opts.logChunkLimitBytes);
    const r = await appendLog(ctx, req.deltaTokenHash, range, body, lazyClientGone(reply));
    if (r.status === 413) {
      return reply.code(413).send({ error: { code: "E_LOG_LIMIT", message: "the job's log limit is reached; the log is truncated", committed: r.committed }, committed: r.committed, truncated: true });
    }
    return reply.code(202).send({ committed: r.committed });
  });

  app.post<{ Body: CompleteRequest }>("/v1/runner/complete", { schema: { body: CompleteRequest }, onRequest: leaseAuth }, async (req, reply) => {
    return reply.code(200).send(await complete(ctx, req.deltaTokenHash, req.body));
  });

  app.post<{ Body: CompleteRequest }>("/v1/runner/cancel-ack", { schema: { body: CompleteRequest }, onRequest: leaseAuth }, async (req, reply) => {
    return reply.code(200).send(await cancelAck(ctx, req.deltaTokenHash, req.body));
  });

  app.get("/v1/runner/source", { onRequest: leaseAuth }, async (req, reply) => {
    const { job } = await fencedAttempt(ctx, store, req.deltaTokenHash);
    const src = job.spec.source;
    if (!src || src.kind !== "archive" || !(await blobs.has(src.sha256))) throw new DeltaError("E_NOT_FOUND", "this job has no archive source");
    return reply
      .code(200)
      .header("content-type", "application/octet-stream")
      .header("x-deltaci-sha256", src.sha256)
      .send(await blobs.open(src.sha256));
  });
}
