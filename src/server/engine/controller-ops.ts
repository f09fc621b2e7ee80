/** Controller operations: registration tokens, demand (long poll), declared capacity. */
import { hashToken, newToken } from "../../base/ids.ts";
import type { DemandResponse, RegistrationsRequest } from "../../protocol/schemas.ts";
import type { EngineContext } from "./context.ts";
import { parseReqKey, unschedulableReason, type Pool } from "./matching.ts";
import { keys } from "./notifier.ts";
import { wake } from "./transitions.ts";

const CAPACITY_KEY = "controller.capacity";

export async function createRegistrations(ctx: EngineContext, body: RegistrationsRequest): Promise<{ tokens: string[] }> {
  const ttl = body.ttlMs ?? ctx.opts.registrationTtlMs;
  return ctx.store.write(async (tx) => {
    const expiresAt = ctx.clock.now() + ttl;
    const tokens: string[] = [];
    for (let i = 0; i < body.count; i++) {
      const t = newToken("registration");
      await tx.insertRegistration({ hash: hashToken(t), labels: [...body.labels], expiresAt, usedAt: null });
      tokens.push(t);
    }
    return { tokens };
  });
}

export type Demand = DemandResponse & { version: number };

export async function demand(ctx: EngineContext): Promise<Demand> {
  const groups = new Map<string, DemandResponse["demand"][number]>();
  for (const r of await ctx.store.demandRows()) {
    let g = groups.get(r.reqKey);
    if (!g) {
      g = { requirements: parseReqKey(r.reqKey), queued: 0, running: 0, unschedulable: 0 };
      groups.set(r.reqKey, g);
    }
    if (r.state === "queued") {
      g.queued += r.count;
      if (r.unschedulable) g.unschedulable = (g.unschedulable ?? 0) + r.count;
    } else g.running += r.count;
  }
  return { demand: [...groups.values()], version: ctx.demand.version };
}

/** Answers at once when the version differs from `since`, else waits up to `waitMs` for a change. */
export async function waitDemand(ctx: EngineContext, since: number | null, waitMs: number, signal: AbortSignal): Promise<Demand> {
  if (since === null || since !== ctx.demand.version || waitMs <= 0) return demand(ctx);
  await ctx.events.wait([keys.demand, keys.shutdown], waitMs, ctx.clock, signal);
  return demand(ctx);
}

export async function loadCapacity(ctx: EngineContext): Promise<void> {
  const raw = await ctx.store.getKv(CAPACITY_KEY);
  if (raw) ctx.capacity.pools = JSON.parse(raw) as Pool[];
}

/** Stores the declared pools and recomputes which queued jobs no pool can serve. */
export async function setCapacity(ctx: EngineContext, pools: Pool[]): Promise<{ pools: number; unschedulable: number }> {
  return ctx.store.write(async (tx) => {
    await tx.setKv(CAPACITY_KEY, JSON.stringify(pools));
    const before = ctx.capacity.pools;
    ctx.capacity.pools = pools;
    tx.onRollback(() => (ctx.capacity.pools = before));
    let unschedulable = 0;
    for (const job of await tx.queuedJobs()) {
      const why = unschedulableReason(parseReqKey(job.reqKey), pools);
      if (why !== null) unschedulable++;
      if (why !== job.unschedulable) await tx.updateJob(job.id, { unschedulable: why });
    }
    wake(ctx, tx, keys.demand);
    return { pools: pools.length, unschedulable };
  });
}
