/**
 * The teardown phase, after the report (the control plane knows the result while the sandbox is
 * still being disposed of). The uploader is stopped and the sandbox disposed of side by side,
 * dispose under its own bound; the heartbeat is stopped beside them, or after the dispose when the
 * report was accepted (its held call is answered as the attempt ends: by then it has returned and
 * keeps its connection, where an abort would cost one). Then the spool is closed and the job dir
 * (spool, staging) removed. When it resolves, no timer, request or listener of the run is left,
 * except a dispose that overran its bound (it goes on; its sandbox is the factory's to reap).
 */
import { rm, rmdir, unlink } from "node:fs/promises";
import type { Sandbox } from "../sandbox/types.ts";
import { deadlineSignal } from "./deadline.ts";
import type { JobRun } from "./job-run.ts";

export async function teardownJob(run: JobRun): Promise<void> {
  const { deps, phases } = run;
  run.status.phase = "teardown";
  const stopHeartbeat = () => run.heartbeat.stop().then(() => phases.mark("heartbeatStopped"));
  const heartbeatStopped = run.heartbeat.isReleased ? null : stopHeartbeat();
  const uploaderClosed = run.uploader.close(new Error("job over"));
  try {
    if (run.sandbox !== null) {
      await disposeBounded(run, run.sandbox);
      phases.mark("disposed");
    }
  } finally {
    await Promise.all([heartbeatStopped ?? stopHeartbeat(), uploaderClosed]);
    run.spool.close();
    await removeJobDir(deps.jobDir, run.spool.path);
    phases.mark("cleanedUp");
  }
}

/**
 * The run's dir with all in it. Most runs leave only their spool there: its unlink and the dir's
 * rmdir are two calls, where a recursive rm makes five or more (an lstat and a readdir per level);
 * anything else there (a source archive, artifact staging) makes the rmdir fail, and the rm follows.
 */
async function removeJobDir(dir: string, spoolPath: string): Promise<void> {
  try {
    await unlink(spoolPath);
    await rmdir(dir);
  } catch {
    await rm(dir, { recursive: true, force: true });
  }
}

async function disposeBounded(run: JobRun, sandbox: Sandbox): Promise<void> {
  const { clock, logger, timings } = run.deps;
  const bound = deadlineSignal(clock, timings.disposeMs);
  // The listener goes with `bound` (local to this call) once the timer is cleared.
  const overran = new Promise<void>((resolve) => bound.signal.addEventListener("abort", () => resolve(), { once: true }));
  try {
    await Promise.race([sandbox.dispose(), overran]);
  } catch (err) {
    logger.error({ err: String(err) }, "sandbox dispose failed");
  } finally {
    bound.clear();
  }
  if (bound.signal.aborted) logger.error({ jobId: run.lease.jobId, disposeMs: timings.disposeMs }, "sandbox dispose overran its bound");
}
