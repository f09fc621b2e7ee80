/** Bearer-token checks, run in `onRequest` (before any body is read). Tokens are compared as sha256 hashes. */
import { timingSafeEqual } from "node:crypto";
import type { FastifyRequest } from "fastify";
import { DeltaError } from "../../base/errors.ts";
import { hashToken, TokenPrefix, type TokenKind } from "../../base/ids.ts";

const BEARER = /^Bearer ([\x21-\x7e]{1,512})$/;

/** The bearer token of a request; 401 E_UNAUTHORIZED when there is none. */
export function bearer(req: FastifyRequest): string {
  const h = req.headers.authorization;
  const m = typeof h === "string" ? BEARER.exec(h) : null;
  if (!m?.[1]) throw new DeltaError("E_UNAUTHORIZED", "missing `Authorization: Bearer <token>`");
  return m[1];
}

/** A token of `kind` by its prefix; wrong kinds are rejected before any lookup. */
export function bearerOfKind(req: FastifyRequest, kind: TokenKind): string {
  const t = bearer(req);
  if (!t.startsWith(TokenPrefix[kind])) throw new DeltaError("E_TOKEN_INVALID", `expected a ${kind} token`);
  return t;
}

/** Checks a static operator token (API, controller) against its stored hash. */
export class StaticToken {
  private readonly hash: Buffer;
  constructor(token: string) {
    this.hash = Buffer.from(hashToken(token), "hex");
  }
  check(req: FastifyRequest): void {
    if (!this.matches(bearer(req))) throw new DeltaError("E_TOKEN_INVALID", "token is not valid here");
  }
  /** True when `token` is this token (the web sign-in takes it from a form, not a header). */
  matches(token: string): boolean {
    return timingSafeEqual(Buffer.from(hashToken(token), "hex"), this.hash);
  }
}
