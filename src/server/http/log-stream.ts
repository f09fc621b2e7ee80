/** A job's log as a byte stream: committed bytes from an offset; with follow, until the job ends. */
import { Readable } from "node:stream";
import type { EngineContext } from "../engine/context.ts";
import type { LogBlobs } from "../engine/log-archive.ts";
import { openArchivedLog, readLog } from "../engine/log-ops.ts";
import { keys } from "../engine/notifier.ts";
import type { AttemptState } from "../../protocol/schemas.ts";

const PIECE_BYTES = 256 * 1024;
const FOLLOW_WAIT_MS = 30_000;
/** Attempt states whose log may still grow. */
const FOLLOWED: ReadonlySet<AttemptState> = new Set(["queued", "leased", "running", "canceling"]);

/**
 * Follows attempt `attempt` from `offset`: bytes are sent as they commit. Ends once every
 * committed byte was sent and the attempt is over (terminal or lost). Without a retry that is
 * when the job ends; after a retry the client follows the next attempt (`?attempt=N`,
 * `X-Deltaci-Attempt`). Bytes arriving later in the tail window are read without follow.
 */
export function followLog(ctx: EngineContext, blobs: LogBlobs, jobId: string, attempt: number, offset: number, signal: AbortSignal): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    // An archived log is final: the rest of it in one read.
    const archived = await openArchivedLog(ctx, blobs, jobId, attempt, offset);
    if (archived) {
      yield* archived;
      return;
    }
    let at = offset;
    while (!signal.aborted && !ctx.lifecycle.stopping) {
      // Armed before the reads: an append or state change committed while they are out still wakes us.
      const armed = ctx.events.arm([keys.log(jobId), keys.job(jobId), keys.shutdown]);
      try {
        const bytes = await readLog(ctx, blobs, jobId, attempt, at, PIECE_BYTES);
        if (bytes.length > 0) {
          at += bytes.length;
          yield bytes;
          continue;
        }
        const a = await ctx.store.getAttempt(jobId, attempt);
        if (!a || !FOLLOWED.has(a.state)) return;
        await armed.wait(FOLLOW_WAIT_MS, ctx.clock, signal);
      } finally {
        armed.off();
      }
    }
  }
  return Readable.from(gen(), { objectMode: false });
}

/** The committed bytes of one attempt from `offset`, as a stream (no follow). */
export function readLogStream(ctx: EngineContext, blobs: LogBlobs, jobId: string, attempt: number, offset: number): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    const archived = await openArchivedLog(ctx, blobs, jobId, attempt, offset);
    if (archived) {
      yield* archived;
      return;
    }
    let at = offset;
    for (;;) {
      const bytes = await readLog(ctx, blobs, jobId, attempt, at, PIECE_BYTES);
      if (bytes.length === 0) return;
      at += bytes.length;
      yield bytes;
    }
  }
  return Readable.from(gen(), { objectMode: false });
}
