/**
 * The report phase. After a lost or stale lease: no report, only the log tail, briefly. Else the
 * final log flush and `complete` (or `cancel-ack` after a cancel) under the report's own bound
 * (STYLE.md 4): a slow but reachable server still gets it; a stale lease (409) or the bound ends
 * it. A 412 rewinds the log to the server's `committed` and tries again.
 */
import { isDeltaError } from "../base/errors.ts";
import type { CompleteRequest } from "../protocol/schemas.ts";
import type { ReportBody } from "./collect-job.ts";
import { deadlineSignal } from "./deadline.ts";
import type { JobReport, JobRun, RunJobResult } from "./job-run.ts";
import { reportModeOf } from "./stop-cause.ts";

/** Complete attempts (each after a 412 rewind) before the run gives up. */
const REPORT_ROUNDS = 5;

export async function reportJob(run: JobRun, body: ReportBody): Promise<RunJobResult> {
  const { deps, lease, uploader } = run;
  const { clock, timings } = deps;
  const cause = run.stop.cause;
  if (cause?.kind === "lease_ended") {
    const tail = deadlineSignal(clock, timings.tailUploadMs);
    await uploader.finish(tail.signal).catch(() => {});
    tail.clear();
    return { report: cause.why, result: null };
  }
  run.stop.startReporting();
  const stale = run.stop.signalWhen((c) => c.kind === "lease_ended" && c.why === "stale", "report stopped");
  const bound = deadlineSignal(clock, 2 * lease.ttlMs + timings.tailUploadMs, stale.signal);
  try {
    return await sendReport(run, body, reportModeOf(cause) === "cancel-ack", bound.signal);
  } finally {
    bound.clear();
    stale.release();
  }
}

async function sendReport(run: JobRun, body: ReportBody, canceled: boolean, signal: AbortSignal): Promise<RunJobResult> {
  const { deps, lease, uploader } = run;
  const { client, logger } = deps;
  const none = (report: JobReport): RunJobResult => ({ report, result: null });
  for (let round = 0; round < REPORT_ROUNDS; round++) {
    const summary = await uploader.finish(signal);
    if (signal.aborted) return none("lost");
    if (uploader.stopped === "stale") return none("stale");
    const full: CompleteRequest = { ...body, log: { bytes: summary.bytes, sha256: summary.sha256 } };
    if (uploader.stopped === "limit" && full.failure === null) {
      full.failure = { reason: "log_limit", step: null, message: "the server's log limit was reached" };
      full.result = "failed";
    }
    try {
      const res = canceled ? await client.cancelAck(lease.leaseToken, full, { signal }) : await client.complete(lease.leaseToken, full, { signal });
      if (res.status === "accepted") {
        run.heartbeat.release(); // the attempt ended: its held heartbeat is answered, not aborted
        return { report: canceled ? "canceled" : "completed", result: full };
      }
      logger.warn({ committed: res.committed, bytes: summary.bytes }, "server log incomplete; resending");
      uploader.rewind(res.committed);
    } catch (err) {
      if (isDeltaError(err, "E_LEASE_STALE")) return none("stale");
      if (signal.aborted) return none("lost");
      logger.error({ err: String(err) }, canceled ? "cancel-ack refused" : "complete refused");
      return none("unreported");
    }
  }
  return none("unreported");
}
