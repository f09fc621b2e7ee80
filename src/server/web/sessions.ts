/**
 * Web sign-in: an API token, given once to `POST /web/session`, is exchanged for a random
 * session id in an HttpOnly, SameSite=Strict cookie. The token itself is never stored in the
 * browser. Sessions live in this server's memory (a restart signs everyone out); each carries a
 * CSRF token that state-changing requests must echo in a header.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { Clock } from "../../base/clock.ts";
import { DeltaError } from "../../base/errors.ts";

export const SESSION_COOKIE = "deltaci_session";
export const CSRF_HEADER = "x-deltaci-csrf";

export interface WebSession {
  csrf: string;
  expiresAt: number;
}

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

export class WebSessions {
  /** By sha256 of the cookie value, so a heap dump does not hand out live cookies. */
  private readonly byHash = new Map<string, WebSession>();

  constructor(private readonly clock: Clock, private readonly ttlMs: number, private readonly max: number) {}

  create(): { id: string; session: WebSession } {
    this.prune();
    while (this.byHash.size >= this.max) {
      const oldest = this.byHash.keys().next().value;
      if (oldest === undefined) break;
      this.byHash.delete(oldest);
    }
    const id = randomBytes(32).toString("base64url");
    const session = { csrf: randomBytes(24).toString("base64url"), expiresAt: this.clock.now() + this.ttlMs };
    this.byHash.set(sha(id), session);
    return { id, session };
  }

  get(id: string): WebSession | null {
    const key = sha(id);
    const s = this.byHash.get(key);
    if (!s) return null;
    if (s.expiresAt <= this.clock.now()) {
      this.byHash.delete(key);
      return null;
    }
    return s;
  }

  end(id: string): void {
    this.byHash.delete(sha(id));
  }

  get size(): number {
    return this.byHash.size;
  }

  private prune(): void {
    const now = this.clock.now();
    for (const [k, s] of this.byHash) if (s.expiresAt <= now) this.byHash.delete(k);
  }
}

/** The session cookie's value from a request, or null. */
export function sessionCookie(req: FastifyRequest): string | null {
  const header = req.headers.cookie;
  if (typeof header !== "string") return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0 || part.slice(0, eq).trim() !== SESSION_COOKIE) continue;
    const v = part.slice(eq + 1).trim();
    return /^[A-Za-z0-9_-]{43}$/.test(v) ? v : null;
  }
  return null;
}

/** The request's live session; 401 E_UNAUTHORIZED when there is none. */
export function requireSession(sessions: WebSessions, req: FastifyRequest): WebSession {
  const id = sessionCookie(req);
  const s = id === null ? null : sessions.get(id);
  if (!s) throw new DeltaError("E_UNAUTHORIZED", "not signed in");
  return s;
}

/**
 * A state-changing request must come from our own pages: same origin when the browser says
 * (Origin or Sec-Fetch-Site), and carrying the session's CSRF token in a header, which a
 * cross-site form cannot set.
 */
export function requireSameOrigin(req: FastifyRequest): void {
  const site = req.headers["sec-fetch-site"];
  if (typeof site === "string" && site !== "same-origin" && site !== "none") throw new DeltaError("E_FORBIDDEN", "cross-site request refused");
  const origin = req.headers.origin;
  if (typeof origin === "string" && origin !== `${req.protocol}://${req.headers.host ?? ""}`) throw new DeltaError("E_FORBIDDEN", "cross-origin request refused");
}

export function requireCsrf(session: WebSession, req: FastifyRequest): void {
  requireSameOrigin(req);
  const got = req.headers[CSRF_HEADER];
  const a = Buffer.from(typeof got === "string" ? got : "");
  const b = Buffer.from(session.csrf);
  if (a.length !== b.length || !timingSafeEqual(a, b)) throw new DeltaError("E_FORBIDDEN", `missing or wrong ${CSRF_HEADER} header`);
}

export function setSessionCookie(reply: FastifyReply, req: FastifyRequest, id: string, maxAgeMs: number): void {
  const secure = req.protocol === "https" ? "; Secure" : "";
  reply.header("set-cookie", `${SESSION_COOKIE}=${id}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${Math.floor(maxAgeMs / 1000)}${secure}`);
}

export function clearSessionCookie(reply: FastifyReply): void {
  reply.header("set-cookie", `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`);
}
