/** A job's log as a byte stream: committed bytes from an offset; with follow, until the job ends. */
import { Readable } from "node:stream";
import type { EngineContext } from "../engine/context.ts";
import { readLog } from "../engine/log-ops.ts";
import { keys } from "../engine/notifier.ts";
import { TERMINAL_JOB } from "../engine/transitions.ts";

const PIECE_BYTES = 256 * 1024;
const FOLLOW_WAIT_MS = 30_000;

/**
 * Follows attempt `attempt` from `offset`. When a newer attempt supersedes it (a retry), a marker
 * line is written and the stream continues with the new attempt from its start. Ends when the
 * job is terminal and every committed byte was sent, or when `signal` aborts.
 */
export function followLog(ctx: EngineContext, jobId: string, attempt: number, offset: number, signal: AbortSignal): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    let at = offset;
    let n = attempt;
    while (!signal.aborted) {
      const bytes = readLog(ctx, jobId, n, at, PIECE_BYTES);
      if (bytes.length > 0) {
        at += bytes.length;
        yield bytes;
        continue;
      }
      const job = ctx.store.getJob(jobId);
      if (!job) return;
      if (job.attempt > n) {
        const a = ctx.store.getAttempt(jobId, n);
        const next = job.attempt;
        const more = readLog(ctx, jobId, n, at, 1);
        if (more.length > 0) continue;
        yield Buffer.from(`\n[deltaci] attempt ${n} ended (${a?.state ?? "unknown"}); attempt ${next} follows\n`);
        n = next;
        at = 0;
        continue;
      }
      if (TERMINAL_JOB.has(job.state)) {
        const a = ctx.store.getAttempt(jobId, n);
        // The tail window lets a finished attempt's last lines arrive late; wait for them only while the runner is still sending.
        if (!a || readLog(ctx, jobId, n, at, 1).length === 0) return;
        continue;
      }
      await ctx.events.wait([keys.log(jobId), keys.job(jobId), keys.shutdown], FOLLOW_WAIT_MS, ctx.clock, signal);
    }
  }
  return Readable.from(gen(), { objectMode: false });
}

/** The committed bytes of one attempt from `offset`, as a stream (no follow). */
export function readLogStream(ctx: EngineContext, jobId: string, attempt: number, offset: number): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    let at = offset;
    for (;;) {
      const bytes = readLog(ctx, jobId, attempt, at, PIECE_BYTES);
      if (bytes.length === 0) return;
      at += bytes.length;
      yield bytes;
    }
  }
  return Readable.from(gen(), { objectMode: false });
}
