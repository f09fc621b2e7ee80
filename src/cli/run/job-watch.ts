/**
 * Watches one submitted job until it ends: its log followed live through a LogPrinter, its
 * state polled for the status line (waiting for a runner, preparing, which step), and its
 * artifacts downloaded at the end.
 */
import { mkdir, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";
import { spawn } from "node:child_process";
import type { Clock } from "../../base/clock.ts";
import type { JobApiClient } from "../../client/job-api-client.ts";
import { TERMINAL_JOB_STATES, type JobStatus } from "../../protocol/schemas.ts";
import { artifactFile } from "../artifact-file.ts";
import { LogPrinter } from "../log-printer.ts";
import type { Style } from "../style.ts";
import type { SubmittedJob } from "../submit-jobs.ts";

export interface WatchUi {
  print(text: string): void;
  /** What the job is doing now, for the status line ("" once it has ended). */
  setActivity(job: string, text: string): void;
}

const POLL_MS = 250;
/** How long a job may stay unschedulable (the controller re-checks its capacity) before `run` gives up on it. */
const UNSCHEDULABLE_GIVE_UP_MS = 3_000;

export function isTerminal(st: Pick<JobStatus, "state">): boolean {
  return TERMINAL_JOB_STATES.includes(st.state);
}

function activity(st: JobStatus, stepNames: string[], currentStep: string | null): string {
  if (currentStep && (st.state === "leased" || st.state === "running")) return `running ${currentStep}`;
  switch (st.state) {
    case "queued":
      return st.unschedulable ? `cannot be scheduled: ${st.unschedulable}` : "waiting for a runner";
    case "leased":
      return "runner preparing the sandbox";
    case "running":
      return currentStep ? `running ${currentStep}` : `running (${stepNames.length} step${stepNames.length === 1 ? "" : "s"})`;
    case "canceling":
      return "canceling: waiting for the runner to stop the steps";
    default:
      return "";
  }
}

/**
 * Follows every attempt's log in turn (a retried job prints a header per new attempt) until
 * the job ends. Resolves when the last attempt's log is complete or `signal` aborts.
 */
/** Follows the job's log, attempt after attempt; resolves with the job's terminal status. */
async function followAttempts(client: JobApiClient, sub: SubmittedJob, o: WatchOptions, printers: LogPrinter[], stepsFor: (p: LogPrinter) => void): Promise<JobStatus> {
  let attempt: number | undefined;
  for (;;) {
    const printer = new LogPrinter({ write: (t) => o.ui.print(t), style: o.style, prefix: o.prefix, fold: o.fold });
    printers.push(printer);
    stepsFor(printer);
    const done = await client.followLog(sub.jobId, (chunk) => printer.push(chunk), { clock: o.clock, signal: o.signal, ...(attempt === undefined ? {} : { attempt }) });
    printer.end();
    // The status read when the stream ended: a request less on every job's last moments. An
    // attempt that ended without ending the job (a retry follows) is looked at again.
    const st = isTerminal(done.status) ? done.status : await client.status(sub.jobId, o.signal);
    const next = st.attempts.find((a) => a.attempt > done.attempt);
    if (isTerminal(st) && !next) return st;
    if (!next) {
      await o.clock.sleep(POLL_MS, o.signal);
      attempt = done.attempt;
      continue;
    }
    const prev = st.attempts.find((a) => a.attempt === done.attempt);
    o.ui.print(`${o.prefix}${o.style.yellow(`↻ attempt ${next.attempt} (attempt ${done.attempt} ended: ${prev?.reason ?? prev?.state ?? "?"})`)}\n`);
    attempt = next.attempt;
  }
}

interface WatchOptions {
  ui: WatchUi;
  style: Style;
  prefix: string;
  /** Fold log groups (LogPrinter). */
  fold: boolean;
  clock: Clock;
  signal: AbortSignal;
}

/** Waits POLL_MS, or less when `wake` is aborted first (→ true). Rejects when `signal` aborts. */
async function pollPause(clock: Clock, signal: AbortSignal, wake: AbortSignal | null): Promise<boolean> {
  try {
    await clock.sleep(POLL_MS, wake === null ? signal : AbortSignal.any([signal, wake]));
    return false;
  } catch (err) {
    if (signal.aborted || wake === null || !wake.aborted) throw err;
    return true;
  }
}

/** Follows the log and polls the state until the job ends; returns its final status. */
export async function watchJob(client: JobApiClient, sub: SubmittedJob, o: WatchOptions): Promise<JobStatus> {
  const stepNames = sub.job.spec.steps.map((s) => s.name);
  const followStop = new AbortController();
  const followSignal = AbortSignal.any([o.signal, followStop.signal]);
  const printers: LogPrinter[] = [];
  let current: LogPrinter | null = null;
  let followed: JobStatus | null = null;
  const follow = followAttempts(client, sub, { ...o, signal: followSignal }, printers, (p) => (current = p)).then((st) => void (followed = st), (err: unknown) => {
    if (!followSignal.aborted) o.ui.print(`${o.prefix}${o.style.yellow(`(log stream lost: ${(err as Error).message})`)}\n`);
  });
  // The log ends with the job: then the state is polled at once (once), not up to POLL_MS later.
  const logEnded = new AbortController();
  void follow.then(() => logEnded.abort());
  let wake: AbortSignal | null = logEnded.signal;
  let st: JobStatus;
  let unschedulableSince: number | null = null;
  const submittedAt = o.clock.now();
  for (;;) {
    // The log follow ends with the job and brings its terminal status: no need to ask again.
    st = followed ?? (await client.status(sub.jobId, o.signal));
    // Nothing on this machine can ever run it (another os/arch): say so and cancel, not wait forever.
    unschedulableSince = st.state === "queued" && st.unschedulable ? (unschedulableSince ?? o.clock.now()) : null;
    if (unschedulableSince !== null && o.clock.now() - unschedulableSince >= UNSCHEDULABLE_GIVE_UP_MS) {
      o.ui.print(`${o.prefix}${o.style.red(`cannot run here: ${st.unschedulable ?? ""}; canceling`)}\n`);
      await client.cancel(sub.jobId, "hard", o.signal);
      unschedulableSince = null;
    }
    const last = (current as LogPrinter | null)?.steps.at(-1);
    const step = last && last.exitCode === null ? `step ${last.index + 1}/${stepNames.length}: ${last.name}` : null;
    const what = activity(st, stepNames, step);
    o.ui.setActivity(sub.job.name, what ? `${what} (${Math.floor((o.clock.now() - submittedAt) / 1000)}s)` : "");
    if (isTerminal(st)) break;
    if (await pollPause(o.clock, o.signal, wake)) wake = null;
  }
  // The follow stream ends with the job; give it a moment to deliver the tail, then stop it.
  const grace = new AbortController();
  const settled = await Promise.race([follow.then(() => true), o.clock.sleep(10_000, AbortSignal.any([o.signal, grace.signal])).then(() => false, () => false)]);
  grace.abort();
  if (!settled) followStop.abort();
  await follow;
  for (const p of printers) p.end();
  o.ui.setActivity(sub.job.name, "");
  return st;
}

export interface DownloadedArtifact {
  name: string;
  size: number;
  sha256: string;
  /** File, or directory when the artifact was a tar of several files (extracted). */
  path: string;
}

/**
 * Downloads every artifact of a job into `dir` (emptied first): a single file to
 * `dir/<name>/<its relative path>`, a tar of several files extracted into `dir/<name>/`.
 */
export async function downloadArtifacts(client: JobApiClient, st: JobStatus, dir: string, signal?: AbortSignal): Promise<DownloadedArtifact[]> {
  await rm(dir, { recursive: true, force: true });
  if (st.artifacts.length === 0) return [];
  await mkdir(dir, { recursive: true });
  const out: DownloadedArtifact[] = [];
  for (const a of st.artifacts) {
    const file = artifactFile(dir, a);
    await mkdir(dirname(file), { recursive: true });
    await client.downloadArtifact(st.jobId, a.name, file, signal);
    let path = file;
    if (a.mediaType === "application/x-tar") {
      const tmp = `${file}.tar`;
      await rename(file, tmp);
      await mkdir(file);
      await untar(tmp, file);
      await rm(tmp, { force: true });
      path = file;
    }
    out.push({ name: a.name, size: a.size, sha256: a.sha256, path });
  }
  return out;
}

/** Extracts an untrusted tar: GNU tar refuses `..` members and strips leading `/`; no owners, no modes beyond umask. */
function untar(file: string, dir: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn("tar", ["-x", "-f", file, "-C", dir, "--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`tar -x ${file}: ${err.trim()}`))));
  });
}
