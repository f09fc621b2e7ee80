/** The loop of the passes only one replica runs at a time (garbage collection, log archive). */
import type { EngineContext } from "./context.ts";

/**
 * Runs `pass` every `intervalMs` while this replica holds the sweeper role (sweeper.ts), until
 * `signal` aborts. A failed pass is logged (`<what> pass failed`) and the next one runs as usual.
 */
export async function whileSweeping(ctx: EngineContext, intervalMs: number, signal: AbortSignal, what: string, pass: () => Promise<void>): Promise<void> {
  while (!signal.aborted) {
    try {
      await ctx.clock.sleep(intervalMs, signal);
    } catch {
      return;
    }
    if (!ctx.roles.sweeper) continue;
    try {
      await pass();
    } catch (err) {
      if (signal.aborted) return;
      ctx.logger?.error({ err }, `${what} pass failed`);
    }
  }
}
