/**
 * Registration tokens minted ahead, per pool, so that the launch that replaces an exited runner
 * does not wait for a mint (`POST /v1/controller/registrations`: a round trip and a server write,
 * ~17 ms p50 on a slot's path in the throughput bench). A launch takes tokens from the pool's
 * reserve; when it holds too few, one request mints the shortfall plus the next `ahead` tokens.
 * Each token is still handed out once. A token is kept unused for at most half its lifetime,
 * then dropped (it expires on the server unspent): every token handed out has at least half of
 * it left for its `register`. Not safe for concurrent `take`s of one pool (the reconciler runs
 * one reconcile at a time, one launch per pool in it); two would only mint more than needed.
 */
import type { Clock } from "../base/clock.ts";
import type { ControlPlane } from "./control-plane.ts";
import type { Pool } from "./types.ts";

/** The server mints at most this many tokens per request (protocol.md). */
const MINT_MAX = 256;

interface Minted {
  token: string;
  /** Local time after which it is no longer handed out. */
  keepUntilMs: number;
}

export interface RegistrationReserveOptions {
  api: Pick<ControlPlane, "registrations">;
  clock: Clock;
  /** Lifetime the tokens are minted with. */
  ttlMs: number;
  /** How many tokens of a pool to hold beyond a launch's need (0: mint per launch, as needed). */
  ahead: (pool: Pool) => number;
}

export class RegistrationReserve {
  private readonly o: RegistrationReserveOptions;
  private readonly held = new Map<string, Minted[]>();

  constructor(opts: RegistrationReserveOptions) {
    this.o = opts;
  }

  /** Tokens held for `pool` now (stale ones not counted). */
  size(pool: Pool): number {
    return this.fresh(pool).length;
  }

  /**
   * `count` tokens for `pool`: the reserve's first, the rest minted in one request together with
   * the refill. A failed mint rejects unless the reserve had some: then those come back alone.
   */
  async take(pool: Pool, count: number, signal?: AbortSignal): Promise<string[]> {
    const have = this.fresh(pool);
    const out = have.splice(0, count).map((m) => m.token);
    const short = count - out.length;
    if (short === 0) return out;
    const mint = Math.min(MINT_MAX, short + Math.max(0, this.o.ahead(pool)));
    const mintedAtMs = this.o.clock.now();
    let tokens: string[];
    try {
      tokens = await this.o.api.registrations(mint, pool.labels, this.o.ttlMs, signal);
    } catch (err) {
      if (out.length > 0) return out;
      throw err;
    }
    const keepUntilMs = mintedAtMs + Math.floor(this.o.ttlMs / 2);
    out.push(...tokens.slice(0, short));
    this.fresh(pool).push(...tokens.slice(short).map((token) => ({ token, keepUntilMs })));
    return out;
  }

  /** Drops every token held, or only `pool`'s (they expire on the server unspent). */
  clear(poolName?: string): void {
    if (poolName !== undefined) this.held.delete(poolName);
    else this.held.clear();
  }

  /** The pool's held tokens, those past their keep time dropped. */
  private fresh(pool: Pool): Minted[] {
    const now = this.o.clock.now();
    const list = (this.held.get(pool.name) ?? []).filter((m) => m.keepUntilMs > now);
    this.held.set(pool.name, list);
    return list;
  }
}
