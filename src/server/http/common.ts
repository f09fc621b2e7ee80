/** Shared bits of the route files: request decoration, body reading, long-poll abort signals. */
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import { Type } from "@sinclair/typebox";

declare module "fastify" {
  interface FastifyRequest {
    /** sha256 of the bearer token the onRequest hook accepted (hashed once per request; never logged). */
    deltaTokenHash: string;
  }
}

export const IdParams = Type.Object({ id: Type.String({ pattern: "^[A-Za-z0-9_-]{1,128}$" }) }, { additionalProperties: false });

/** Rejects an announced body larger than `limit` before reading it. */
export function checkContentLength(req: FastifyRequest, limit: number): void {
  const len = req.headers["content-length"];
  if (len !== undefined && Number(len) > limit) throw new DeltaError("E_TOO_LARGE", `body exceeds ${limit} bytes`);
}

/** The raw octet-stream body (see the content-type parser in app.ts). */
export function rawBody(req: FastifyRequest): Readable {
  const b = req.body as Readable | undefined;
  if (!b || typeof (b as { pipe?: unknown }).pipe !== "function") throw new DeltaError("E_MEDIA_TYPE", "body must be application/octet-stream");
  return b;
}

/**
 * A body of at most `limit` bytes as the chunks it arrived in (no copy). Read with listeners, not
 * `for await`: a stream's async iterator costs a dozen allocations and promise turns per body,
 * which a 4 KiB log PUT paid on every request.
 */
export function readCappedParts(stream: Readable, limit: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const done = (err: unknown) => {
      stream.off("data", onData);
      stream.off("end", onEnd);
      stream.off("error", done);
      stream.off("close", onClose);
      if (err === null) resolve(parts);
      else reject(err);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done(new DeltaError("E_TOO_LARGE", `body exceeds ${limit} bytes`));
        stream.destroy();
        return;
      }
      parts.push(chunk);
    };
    const onEnd = () => done(null);
    // Closed before its end (the client went away): as `for await` does, a premature close.
    const onClose = () => done(Object.assign(new Error("the request body ended before it was complete"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
    if (stream.readableEnded) return resolve(parts);
    if (stream.destroyed) return onClose();
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", done);
    stream.on("close", onClose);
  });
}

/** Aborts when the client goes away before the response is sent (long polls). */
export function clientGone(reply: FastifyReply): AbortSignal {
  const ac = new AbortController();
  if (reply.raw.destroyed && !reply.raw.writableFinished) {
    ac.abort();
    return ac.signal;
  }
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) ac.abort();
  });
  return ac.signal;
}

/** `clientGone(reply)`, made on first use: most requests that may wait never do (no controller and listener for them). */
export function lazyClientGone(reply: FastifyReply): () => AbortSignal {
  let signal: AbortSignal | null = null;
  return () => (signal ??= clientGone(reply));
}

/** A non-negative integer from a query string value. */
export function queryInt(v: unknown, name: string, dflt: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  if (typeof v !== "string" || !/^\d{1,15}$/.test(v)) throw new DeltaError("E_INVALID", `query parameter ${name} must be a non-negative integer`);
  return Math.min(Number(v), max);
}
