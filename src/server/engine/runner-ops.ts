/** Runner protocol operations: register, lease, heartbeat, complete, cancel-ack (PROTOCOL.md). */
import { DeltaError } from "../../base/errors.ts";
import { hashToken, newId, newToken } from "../../base/ids.ts";
import type {
  CancelMode, CompleteRequest, HeartbeatRequest, HeartbeatResponse, Lease, RegisterRequest, RegisterResponse,
} from "../../protocol/schemas.ts";
import type { EngineContext } from "./context.ts";
import { logDigest } from "./log-ops.ts";
import { matches, parseReqKey } from "./matching.ts";
import { TRANSPARENT_EGRESS_LABEL } from "../../protocol/schemas.ts";
import { liveAttempt } from "./lease-fence.ts";
import { keys, type ArmedWait } from "./notifier.ts";
import { claim, LIVE_ATTEMPT, retryOrError, setAttemptState, setJobState } from "./transitions.ts";
import type { AttemptRow } from "./types.ts";

/** `registrationHash` (and the other ops' token hashes): hashToken of the bearer token, which the route's auth hook computed. */
export async function register(ctx: EngineContext, registrationHash: string, body: RegisterRequest): Promise<RegisterResponse> {
  return ctx.store.write(async (tx) => {
    const now = ctx.clock.now();
    const reg = await tx.getRegistration(registrationHash);
    if (!reg || reg.usedAt !== null || reg.expiresAt <= now) throw new DeltaError("E_TOKEN_INVALID", "registration token is unknown, used or expired");
    const extra = reg.labels.length > 0 ? body.capabilities.labels.filter((l) => !reg.labels.includes(l) && l !== TRANSPARENT_EGRESS_LABEL) : [];
    if (extra.length > 0) throw new DeltaError("E_FORBIDDEN", `labels not granted by this registration: ${extra.join(", ")}`);
    await tx.markRegistrationUsed(registrationHash, now);
    const sessionToken = newToken("session");
    const runnerId = newId("rnr");
    const sessionExpiresAt = now + ctx.opts.sessionTtlMs;
    const sessionHash = hashToken(sessionToken);
    await tx.insertRunner({
      id: runnerId, name: body.name, version: body.version, capabilities: body.capabilities,
      sessionHash, sessionExpiresAt, sessionUsed: false, createdAt: now,
    });
    tx.afterCommit(() => ctx.knownTokens.add(sessionHash, sessionExpiresAt));
    return { runnerId, sessionToken, sessionExpiresAt: new Date(sessionExpiresAt).toISOString(), leaseWaitMs: ctx.opts.leaseWaitDefaultMs };
  });
}

/** Long poll: a lease, or null after `waitMs` with no matching job. */
export async function lease(ctx: EngineContext, sessionHash: string, waitMs: number, signal: AbortSignal): Promise<Lease | null> {
  const wait = Math.min(waitMs, ctx.opts.leaseWaitMaxMs);
  const holder: { held: Promise<Lease | null> | null } = { held: null };
  const immediate = await ctx.store.write(async (tx) => {
    const now = ctx.clock.now();
    // Both sent at once (one round trip on PostgreSQL); the keys are read once the runner's row is held.
    const [runner, queued] = await Promise.all([tx.getRunnerBySession(sessionHash), tx.queuedReqKeys()]);
    if (!runner || runner.sessionExpiresAt <= now) throw new DeltaError("E_TOKEN_INVALID", "session token is unknown or expired");
    if (runner.sessionUsed) throw new DeltaError("E_SESSION_USED", "this session already leased its one job");
    const fit = queued.filter((k) => matches(parseReqKey(k), runner.capabilities));
    const job = fit.length > 0 ? await tx.oldestQueued(fit) : undefined;
    if (job) return claim(ctx, tx, job, runner);
    if (wait <= 0 || signal.aborted || ctx.lifecycle.stopping) return null;
    holder.held = new Promise<Lease | null>((resolve) => {
      const stop = new AbortController();
      const waiter = {
        runnerId: runner.id,
        caps: runner.capabilities,
        settle: (l: Lease | null) => {
          stop.abort();
          signal.removeEventListener("abort", giveUp);
          resolve(l);
        },
      };
      const giveUp = () => {
        if (ctx.waiters.remove(waiter)) waiter.settle(null);
      };
      ctx.waiters.add(waiter);
      tx.onRollback(() => ctx.waiters.remove(waiter));
      signal.addEventListener("abort", giveUp, { once: true });
      ctx.clock.sleep(wait, stop.signal).then(giveUp, () => undefined);
    });
    return null;
  });
  return immediate ?? (await (holder.held ?? Promise.resolve(null)));
}

export async function heartbeat(ctx: EngineContext, leaseHash: string, body: HeartbeatRequest, signal: AbortSignal): Promise<HeartbeatResponse> {
  // The cancel wake-up is armed inside the transaction, right after the read of the job's
  // cancel mode: a cancel that commits after that read (before the wait starts: the heartbeat's
  // own commit is still out) wakes the wait at once instead of at its end.
  let armed: ArmedWait | undefined;
  try {
    const { a, expiresAt, cancel } = await ctx.store.write(
      async (tx) => {
        const { a, job } = liveAttempt(ctx, await tx.getLeasedAttempt(leaseHash));
        armed?.off(); // a retried transaction arms again
        armed = ctx.events.arm([keys.cancel(a.jobId, a.attempt), keys.shutdown]);
        const expiresAt = ctx.clock.now() + ctx.opts.leaseTtlMs;
        if (a.state === "leased" && body.state !== "preparing") {
          await setAttemptState(ctx, tx, a, "running", `runner reports ${body.state}`, { expiresAt });
          if (job.state === "leased") await setJobState(ctx, tx, job, "running", `attempt ${a.attempt} running`);
        } else {
          await tx.updateAttempt(a.jobId, a.attempt, { expiresAt });
        }
        return { a, expiresAt, cancel: job.cancelMode };
      },
      { durable: false },
    );
    let mode = cancel;
    const waitMs = Math.min(body.waitMs ?? 0, ctx.opts.heartbeatIntervalMs);
    if (mode === "none" && waitMs > 0 && !ctx.lifecycle.stopping && armed) {
      await armed.wait(waitMs, ctx.clock, signal);
      mode = await cancelModeOf(ctx, a.jobId);
    }
    return { expiresAt: new Date(expiresAt).toISOString(), heartbeatIntervalMs: ctx.opts.heartbeatIntervalMs, cancel: mode };
  } finally {
    armed?.off();
  }
}

async function cancelModeOf(ctx: EngineContext, jobId: string): Promise<CancelMode> {
  return (await ctx.store.getJob(jobId))?.cancelMode ?? "none";
}

/** Was this terminal attempt ended by its own runner's report (so a repeat is harmless)? */
const reported = (a: AttemptRow) => a.endedBy === "complete" || a.endedBy === "cancel-ack";

export async function complete(ctx: EngineContext, leaseHash: string, body: CompleteRequest): Promise<{ accepted: true }> {
  return ctx.store.write(async (tx) => {
    const found = await tx.getLeasedAttempt(leaseHash);
    if (found && !LIVE_ATTEMPT.has(found.a.state) && reported(found.a)) return { accepted: true as const };
    const { a, job } = liveAttempt(ctx, found);
    checkLog(a, body);
    const digestNote = !a.logTruncated && (await logDigest(ctx, tx, a)) !== body.log.sha256 ? " (log digest differs from the runner's)" : "";
    if (body.artifacts.length > 0) {
      const artifacts = (await tx.listArtifacts(a.jobId, a.attempt)).filter((x) => x.state === "committed").map((x) => x.id);
      const unknown = body.artifacts.filter((id) => !artifacts.includes(id));
      if (unknown.length > 0) throw new DeltaError("E_INVALID", `artifacts not committed for this attempt: ${unknown.slice(0, 5).join(", ")}`);
    }
    const patch = { steps: body.steps };
    if (job.state === "canceling") {
      await setAttemptState(ctx, tx, a, "canceled", `completed (${body.result}) while canceling${digestNote}`, { endedBy: "complete" });
      await setJobState(ctx, tx, job, "canceled", `canceled; runner completed with ${body.result}`, patch);
      return { accepted: true as const };
    }
    if (body.result === "succeeded") {
      await setAttemptState(ctx, tx, a, "succeeded", `runner reported success${digestNote}`, { endedBy: "complete" });
      await setJobState(ctx, tx, job, "succeeded", `attempt ${a.attempt} succeeded`, patch);
    } else if (body.result === "failed") {
      const failure = body.failure ?? { reason: "step_failed" as const, step: null, message: "runner reported failure" };
      await setAttemptState(ctx, tx, a, "failed", `${failure.reason}${digestNote}`, { endedBy: "complete" });
      await setJobState(ctx, tx, job, "failed", `attempt ${a.attempt} failed: ${failure.reason}`, { ...patch, failure });
    } else {
      const failure = body.failure ?? { reason: "runner_error" as const, step: null, message: "runner reported an error" };
      await setAttemptState(ctx, tx, a, "errored", `${failure.reason}${digestNote}`, { endedBy: "complete" });
      if (failure.reason === "runner_error") {
        await tx.updateJob(job.id, patch);
        await retryOrError(ctx, tx, job, failure);
      } else {
        await setJobState(ctx, tx, job, "errored", `attempt ${a.attempt} errored: ${failure.reason}`, { ...patch, failure });
      }
    }
    return { accepted: true as const };
  });
}

function checkLog(a: AttemptRow, body: CompleteRequest): void {
  if (a.logTruncated || body.log.bytes === a.logBytes) return;
  throw new DeltaError("E_LOG_INCOMPLETE", `server holds ${a.logBytes} log bytes, runner reports ${body.log.bytes}`, { details: { committed: a.logBytes } });
}

export async function cancelAck(ctx: EngineContext, leaseHash: string, body: CompleteRequest): Promise<{ accepted: true }> {
  return ctx.store.write(async (tx) => {
    const found = await tx.getLeasedAttempt(leaseHash);
    if (found && !LIVE_ATTEMPT.has(found.a.state) && reported(found.a)) return { accepted: true as const };
    const { a, job } = liveAttempt(ctx, found);
    if (job.cancelMode === "none") throw new DeltaError("E_CONFLICT", "no cancel was requested for this attempt");
    checkLog(a, body);
    await setAttemptState(ctx, tx, a, "canceled", "runner acknowledged cancel", { endedBy: "cancel-ack" });
    await setJobState(ctx, tx, job, "canceled", `attempt ${a.attempt} canceled (acknowledged)`, { steps: body.steps });
    return { accepted: true as const };
  });
}
