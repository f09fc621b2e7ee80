/**
 * The fence of every op a lease token opens (heartbeat, complete, cancel-ack, artifacts, source):
 * the token's attempt must be live, current and unexpired. One read (`getLeasedAttempt`) brings
 * the attempt and its job; the caller does it inside its write transaction when it then writes.
 */
import { DeltaError } from "../../base/errors.ts";
import type { EngineContext } from "./context.ts";
import type { StateOps } from "./state-store.ts";
import { LIVE_ATTEMPT } from "./transitions.ts";
import type { AttemptRow, JobRow } from "./types.ts";

const stale = (why: string) => new DeltaError("E_LEASE_STALE", `lease is stale: ${why}`);

/** The live attempt a lease token acts on, from its `getLeasedAttempt` read; throws 401 for unknown tokens, 409 for stale ones. */
export function liveAttempt(ctx: EngineContext, found: { a: AttemptRow; job: JobRow | undefined } | undefined): { a: AttemptRow; job: JobRow } {
  if (!found?.job) throw new DeltaError("E_TOKEN_INVALID", "lease token is unknown");
  const { a, job } = found;
  if (!LIVE_ATTEMPT.has(a.state)) throw stale(`attempt ${a.attempt} is ${a.state}`);
  if (job.attempt !== a.attempt) throw stale(`attempt ${a.attempt} was superseded`);
  if ((a.expiresAt ?? 0) <= ctx.clock.now()) throw stale(`attempt ${a.attempt} expired`);
  return { a, job };
}

/** Reads and fences: the live attempt (and its job) the lease token with this hash acts on. */
export async function fencedAttempt(ctx: EngineContext, reads: StateOps, leaseHash: string): Promise<{ a: AttemptRow; job: JobRow }> {
  return liveAttempt(ctx, await reads.getLeasedAttempt(leaseHash));
}
