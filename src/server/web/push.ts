/**
 * Server push for the web view (Server-Sent Events): a snapshot is sent at once, then again
 * whenever one of `wakeKeys` fires and the snapshot changed. Wake-ups are coalesced for
 * `debounceMs`; a comment line every `keepAliveMs` keeps proxies from closing the stream. A
 * wake-up that arrives while a snapshot is being sent is not lost: the listener stays
 * registered for the stream's whole life and only sets a flag.
 */
import { Readable } from "node:stream";
import type { EngineContext } from "../engine/context.ts";

export interface PushOptions {
  event: string;
  wakeKeys: string[];
  /** The payload (JSON text), recomputed after wake-ups; null ends the stream. */
  snapshot: () => Promise<string | null>;
  debounceMs: number;
  keepAliveMs: number;
}

export function pushStream(ctx: EngineContext, o: PushOptions, signal: AbortSignal): Readable {
  async function* gen(): AsyncGenerator<string> {
    let dirty = true;
    let wake: (() => void) | null = null;
    const offs = o.wakeKeys.map((k) =>
      ctx.events.on(k, () => {
        dirty = true;
        wake?.();
      }),
    );
    let last: string | null = null;
    try {
      yield "retry: 2000\n\n";
      while (!signal.aborted && !ctx.lifecycle.stopping) {
        if (!dirty) {
          const stop = new AbortController();
          wake = () => stop.abort();
          const onAbort = () => stop.abort();
          signal.addEventListener("abort", onAbort, { once: true });
          await ctx.clock.sleep(o.keepAliveMs, stop.signal).catch(() => undefined);
          signal.removeEventListener("abort", onAbort);
          wake = null;
          if (signal.aborted || ctx.lifecycle.stopping) return;
          if (!dirty) {
            yield ": keep-alive\n\n";
            continue;
          }
          await ctx.clock.sleep(o.debounceMs, signal).catch(() => undefined);
        }
        dirty = false;
        const payload = await o.snapshot();
        if (payload === null) return;
        if (payload === last) continue;
        last = payload;
        yield `event: ${o.event}\ndata: ${payload}\n\n`;
      }
    } finally {
      for (const off of offs) off();
    }
  }
  return Readable.from(gen(), { objectMode: false });
}
