/**
 * Keeps one replica's in-process wake-ups in step with the others on a shared store: keys other
 * replicas broadcast are emitted here; a job another replica queued is offered to the runners
 * waiting here. A broadcast is a latency hint: every `replicaPollMs` a replica with waiting
 * runners looks for queued jobs itself, and after its feed reconnects it wakes everything.
 */
import { defaults } from "../../config/defaults.ts";
import type { EngineContext } from "./context.ts";
import { matches, parseReqKey } from "./matching.ts";
import { keys } from "./notifier.ts";
import { claim } from "./transitions.ts";

/** Hands queued jobs to the runners waiting in this replica's lease long polls, oldest waiter first. */
export async function serveWaiters(ctx: EngineContext): Promise<number> {
  if (ctx.waiters.size === 0 || ctx.lifecycle.stopping) return 0;
  return ctx.store.write(async (tx) => {
    const queued = await tx.queuedReqKeys();
    let served = 0;
    for (const w of ctx.waiters.list()) {
      const fit = queued.filter((k) => matches(parseReqKey(k), w.caps));
      if (fit.length === 0) continue;
      // Skips jobs another transaction holds: a replica claiming at the same time takes another.
      const job = await tx.oldestQueued(fit);
      if (!job) continue;
      const runner = await tx.getRunner(w.runnerId);
      if (!runner || runner.sessionUsed || !ctx.waiters.remove(w)) continue;
      tx.onRollback(() => ctx.waiters.add(w));
      const lease = await claim(ctx, tx, job, runner);
      tx.afterCommit(() => w.settle(lease));
      served++;
    }
    return served;
  });
}

/** Runs until `signal` aborts; a no-op for a store no other process shares. */
export async function runReplicaSync(ctx: EngineContext, signal: AbortSignal, pollMs: number = defaults.replicaPollMs): Promise<void> {
  if (!ctx.store.shared) return;
  const serve = () => {
    serveWaiters(ctx).catch((err: unknown) => ctx.logger?.warn({ err }, "offering queued jobs to waiting runners failed"));
  };
  let connected = false;
  const stop = await ctx.store.subscribe({
    onKey: (key) => {
      if (key === keys.queued) return serve();
      if (key === keys.demand) ctx.demand.version++;
      ctx.events.emit(key);
    },
    onConnect: () => {
      // The first connect is the start; a reconnect may have missed broadcasts: rescan everything.
      if (connected) {
        ctx.demand.version++;
        ctx.events.emitAll();
      }
      connected = true;
      serve();
    },
  });
  try {
    while (!signal.aborted) {
      await ctx.clock.sleep(pollMs, signal).catch(() => undefined);
      if (!signal.aborted && ctx.waiters.size > 0) serve();
    }
  } finally {
    await stop().catch(() => undefined);
  }
}
