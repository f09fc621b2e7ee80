/** Shared bits of the route files: request decoration, body reading, long-poll abort signals. */
import type { FastifyReply, FastifyRequest } from "fastify";
import { finished, type Readable } from "node:stream";
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
 * A body of at most `limit` bytes as the chunks it arrived in (no copy). Read with 'data'
 * events: an async iterator costs a promise and a read() per 64 KiB chunk (a 4 MiB log PUT has 64).
 */
export function readCappedParts(stream: Readable, limit: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    let tooLarge: DeltaError | null = null;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) parts.push(chunk);
      else if (tooLarge === null) {
        tooLarge = new DeltaError("E_TOO_LARGE", `body exceeds ${limit} bytes`);
        stream.destroy();
      }
    };
    stream.on("data", onData);
    finished(stream, (err) => {
      stream.off("data", onData);
      if (tooLarge !== null) reject(tooLarge);
      else if (err) reject(err);
      else resolve(parts);
    });
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
