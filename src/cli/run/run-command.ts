/**
 * `deltaci run [FILE]`: the whole loop on this machine, no server needed. Validates the file,
 * starts the embedded stack, packs and uploads the source, submits every selected job at once,
 * streams their logs, and ends with a summary and the artifacts under ./.deltaci/artifacts/.
 * Ctrl-C cancels the jobs gracefully and waits for their acknowledgement; a second Ctrl-C
 * cancels hard. Exit: 0 all succeeded, 1 a job did not, 2 bad input, 130 interrupted.
 */
import { dirname, join, relative, resolve } from "node:path";
import type { Command } from "commander";
import { systemClock } from "../../base/clock.ts";
import { noColorRequested } from "../../config/client-config.ts";
import type { JobStatus } from "../../protocol/schemas.ts";
import { CliExit, ExitCode, usageError } from "../exit.ts";
import { loadJobs, resolveJobFile, selectJobs } from "../load-jobs.ts";
import { parseSecretFlags, secretsForJob } from "../secrets.ts";
import { jobColour, makeStyle } from "../style.ts";
import { packSource } from "../source-pack.ts";
import { submitJobs, takesLocalSource, type SubmittedJob } from "../submit-jobs.ts";
import { downloadArtifacts, watchJob, type DownloadedArtifact } from "./job-watch.ts";
import { checkIsolation } from "./isolation.ts";
import { defaults } from "../../config/defaults.ts";
import { newCrunFactory } from "./early-factory.ts";
import { startLocalStack, type Isolation, type LocalStack } from "./local-stack.ts";
import { StatusLine } from "./status-line.ts";
import { formatSummary, jobResult, type JobOutcome } from "./summary.ts";

interface RunFlags {
  job: string[];
  secret: string[];
  fork?: boolean;
  isolation?: string;
  json?: boolean;
  source?: string;
  keepState?: boolean;
  runnerProcesses?: boolean;
  timings?: boolean;
  fold?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export function registerRunCommand(program: Command): void {
  program
    .command("run")
    .argument("[file]", "job file (default: .deltaci.yml, .deltaci.yaml, deltaci.yml or deltaci.yaml here)")
    .description("run a job file's jobs on this machine: embedded server, controller and sandboxed runners; no set-up")
    .option("--job <name>", "run only this job (repeatable)", collect, [])
    .option("--secret <NAME[=VALUE]>", "give jobs a secret; without =VALUE it is read from the environment (repeatable; never printed)", collect, [])
    .option("--fork", "run as untrusted (a fork): no secrets, read-only caches")
    .option("--isolation <oci|process>", "sandbox: oci (crun, the default) or process (NO isolation, development only)")
    .option("--source <dir>", "directory packed as the job's source (default: the job file's directory)")
    .option("--json", "print a JSON summary on stdout (logs go to stderr)")
    .option("--keep-state", "keep the run's temp dir (server state, runner logs) for debugging")
    .option("--timings", "print where the time went (phases, ms since the process started) to stderr")
    .option("--runner-processes", "start runners as child processes (`deltaci runner`, as `deltaci up` does) instead of in this process")
    .option("--fold", "fold log groups (::group::, section_start, --- NAME) to a line count (default on a terminal)")
    .option("--no-fold", "print every line of log groups")
    .action((file: string | undefined, flags: RunFlags) => runCommand(file, flags));
}

async function runCommand(file: string | undefined, flags: RunFlags): Promise<void> {
  const started = systemClock.now();
  // Phase marks for --timings: ms since this process started (node's own start-up included).
  const marks: Array<[string, number]> = [["cli ready", Math.round(performance.now())]];
  const mark = (name: string) => marks.push([name, Math.round(performance.now())]);
  const cwd = process.cwd();
  const path = resolveJobFile(file, cwd);
  if (flags.isolation !== undefined && flags.isolation !== "oci" && flags.isolation !== "process") {
    throw usageError(`deltaci: --isolation: expected oci or process, got "${flags.isolation}"`);
  }
  const isolation: Isolation = (flags.isolation) ?? "oci";
  const sourceDir = resolve(cwd, flags.source ?? dirname(path));
  // The in-process runners' oci factory starts its one-time preparation (cgroups, helpers, seccomp,
  // the resident spawner) while the job file is read: it begins the longest path (the first
  // sandbox). The isolation check below waits for it; an invalid file closes it.
  const crunFactory = isolation === "oci" && flags.runnerProcesses !== true ? newCrunFactory([join(defaults.sandboxCacheDir, "images"), sourceDir]) : undefined;
  crunFactory?.factory.prepare().catch(() => {}); // a failure is the isolation check's answer
  const fork = flags.fork === true;
  const [jobs, secrets] = await (async () => {
    const jobs = selectJobs(loadJobs(path, cwd), flags.job);
    const secrets = parseSecretFlags(flags.secret);
    for (const j of jobs) secretsForJob(j, secrets, fork); // a missing secret is a usage error before anything starts
    return [jobs, secrets] as const;
  })().catch(async (err: unknown) => {
    await crunFactory?.factory.close();
    throw err;
  });

  const human = flags.json ? process.stderr : process.stdout;
  const tty = human.isTTY === true;
  const style = makeStyle(tty && !noColorRequested());
  const line = new StatusLine({ write: (t) => human.write(t), tty, clock: systemClock });
  const activities = new Map<string, string>();
  const showActivities = () => {
    // Piped, a running job speaks through its log (step headers): only waits are worth a line.
    const worth = ([, a]: [string, string]) => a !== "" && (tty || !a.startsWith("running "));
    const shown = [...activities].filter(worth).map(([n, a]) => (jobs.length > 1 && n ? `${n}: ${a}` : a)).join(" · ");
    line.set(shown, shown.replace(/ \(\d+s\)/g, ""));
  };
  const setActivity = (name: string, text: string) => {
    activities.set(name, text);
    showActivities();
  };

  if (isolation === "process") line.print(style.yellow("warning: --isolation process runs the steps WITHOUT a sandbox, as this user on this machine (development only)\n"));
  const interrupt = new Interrupts();
  interrupt.install();
  line.start();
  setActivity("", `starting the local server and ${jobs.length} ${isolation} runner${jobs.length === 1 ? "" : "s"}`);
  let stack: LocalStack | null = null;
  const outcomes: JobOutcome[] = [];
  try {
    // Independent start-up work runs at once: the sandbox check, the stack, and packing the source.
    // The check waits for the in-process runners' factory's preparation (started above): done once.
    const checking = isolation === "oci" ? checkIsolation(crunFactory?.factory) : Promise.resolve(null);
    const packing = jobs.some(takesLocalSource) ? packSource(sourceDir) : null; // git-source jobs clone in the sandbox
    packing?.then(() => mark("source packed"), () => {}); // awaited below; a failure must not be an unhandled rejection meanwhile
    const starting = startLocalStack({ jobs, isolation, keep: flags.keepState === true, runnerProcesses: flags.runnerProcesses === true, crunFactory, mark });
    stack = await interrupt.race(starting).catch(async (err: unknown) => {
      await (await starting.catch(() => null))?.close(); // interrupted while starting: tear down what started
      throw err;
    });
    const isolationProblem = await interrupt.race(checking);
    mark("isolation checked");
    if (isolationProblem) {
      throw usageError(`deltaci: the oci sandbox (crun) does not work on this machine: ${isolationProblem}\n` +
        `  Fix that (see docs/sandbox.md), or run without isolation, for development only: deltaci run --isolation process ${file ?? ""}`.trimEnd());
    }
    if (packing) setActivity("", "packing the source");
    // Submitted while the controller starts: the jobs wait in the queue for its runners.
    const [submitted] = await interrupt.race(Promise.all([
      // The run's server is fresh and keeps blobs on its disk: the source is posted, not declared first.
      submitJobs(stack.client, { jobs, source: packing, secrets, fork, declareSource: false, onProgress: (t) => line.print(style.dim(`${t}\n`)) }),
      stack.controllerUp,
    ]));
    mark("source uploaded, jobs submitted");
    setActivity("", "");
    const client = stack.client;
    interrupt.onCancel = (mode) => {
      line.print(style.yellow(mode === "graceful" ? "\ninterrupted: canceling the jobs (Ctrl-C again to stop them at once)\n" : "\ncanceling hard\n"));
      for (const s of submitted) void client.cancel(s.jobId, mode).catch(() => {});
    };
    if (interrupt.count > 0) interrupt.onCancel(interrupt.count > 1 ? "hard" : "graceful");
    const ui = { print: (t: string) => line.print(t), setActivity };
    const finals = await Promise.all(
      submitted.map((s, i) =>
        watchJob(client, s, {
          ui, style, clock: systemClock, signal: interrupt.abort.signal, fold: flags.fold ?? tty,
          prefix: jobs.length > 1 ? `${jobColour(style, i)(s.job.name.padEnd(Math.max(...jobs.map((j) => j.name.length))))} │ ` : "",
        }),
      ),
    );
    mark("jobs ended, logs complete");
    // The jobs are over: a Ctrl-C from here on only counts (exit 130); it must not kill the
    // process mid-teardown, which would leave no summary (or print part of it).
    interrupt.onCancel = () => {};
    line.set("downloading artifacts");
    for (const [i, st] of finals.entries()) {
      const sub = submitted[i] as SubmittedJob;
      const artifactsDir = join(cwd, ".deltaci", "artifacts", sub.job.name);
      let artifacts: DownloadedArtifact[] = [];
      let artifactError: string | null = null;
      try {
        artifacts = await downloadArtifacts(client, st, artifactsDir);
      } catch (err) {
        artifactError = (err as Error).message;
      }
      outcomes.push({ sub, status: st, artifacts, artifactError });
    }
  } catch (err) {
    interrupt.uninstall();
    line.stop();
    await stack?.close();
    throw err;
  }
  line.stop();
  mark("artifacts downloaded");
  // Still installed: a Ctrl-C while the summary is written is counted, never a kill half-way.
  // A person reads the summary while the stack is torn down; the JSON summary (its durationMs and
  // timingsMs) still comes after the teardown, which a script waits for anyway.
  if (!flags.json) {
    await writeOnce(human, formatSummary(outcomes, { style, cwd, durationMs: systemClock.now() - started }));
    mark("summary printed");
  }
  await stack.close();
  mark("stack closed");
  // after the teardown: a Ctrl-C during it still makes the exit 130
  const exitCode = interrupt.count > 0 ? ExitCode.interrupted : outcomes.every((o) => o.status.state === "succeeded") ? ExitCode.ok : ExitCode.jobFailed;
  if (flags.timings) process.stderr.write(`${marks.map(([n, ms]) => `timing: ${String(ms).padStart(6)} ms  ${n}`).join("\n")}\n`);
  if (flags.json) {
    const summary = { ...jsonSummary(outcomes, exitCode, systemClock.now() - started, cwd), timingsMs: Object.fromEntries(marks) };
    await writeOnce(process.stdout, `${JSON.stringify(summary, null, 2)}\n`);
  }
  await writeOnce(process.stderr, "");
  // The handler stays installed to the end, and the process exits here rather than when its event
  // loop drains: node's natural exit closes its signal handles (SIGINT back to the default
  // action) while it still tears down, and a Ctrl-C landing then killed the process after its
  // summary (a signal death, not 130). `process.exit` keeps the handler until the process is gone.
  process.exit(exitCode);
}

/** One write of the whole summary, resolved once it is flushed (a pipe may take it in pieces). */
function writeOnce(out: NodeJS.WritableStream, text: string): Promise<void> {
  return new Promise((resolve) => out.write(text, () => resolve()));
}

function jsonSummary(outcomes: JobOutcome[], exitCode: number, durationMs: number, cwd: string) {
  return {
    result: exitCode === ExitCode.ok ? "succeeded" : exitCode === ExitCode.interrupted ? "interrupted" : "failed",
    exitCode,
    durationMs,
    jobs: outcomes.map((o) => ({
      name: o.sub.job.name,
      jobId: o.sub.jobId,
      runId: o.sub.runId,
      state: o.status.state,
      result: jobResult(o.status),
      durationMs: jobDuration(o.status),
      failure: o.status.failure,
      steps: o.status.steps,
      artifacts: o.artifacts.map((a) => ({ ...a, path: relative(cwd, a.path) })),
      ...(o.artifactError ? { artifactError: o.artifactError } : {}),
    })),
  };
}

export function jobDuration(st: JobStatus): number | null {
  if (!st.finishedAt) return null;
  return Math.max(0, Date.parse(st.finishedAt) - Date.parse(st.createdAt));
}

/**
 * Ctrl-C: the first cancels gracefully, the second hard; before the jobs exist, it aborts the
 * set-up. A third one stops waiting at once (the stack is still torn down).
 */
class Interrupts {
  count = 0;
  readonly abort = new AbortController();
  onCancel: ((mode: "graceful" | "hard") => void) | null = null;
  private readonly setupAbort = new AbortController();
  private readonly handler = () => {
    this.count++;
    if (this.count >= 3) return this.abort.abort(new CliExit(ExitCode.interrupted, "deltaci: interrupted three times: not waiting for the jobs"));
    if (this.onCancel) this.onCancel(this.count > 1 ? "hard" : "graceful");
    else this.setupAbort.abort(new CliExit(ExitCode.interrupted, "deltaci: interrupted"));
  };

  install(): void {
    process.on("SIGINT", this.handler);
    process.on("SIGTERM", this.handler);
  }

  uninstall(): void {
    process.removeListener("SIGINT", this.handler);
    process.removeListener("SIGTERM", this.handler);
  }

  /** Resolves with `p`, or rejects when Ctrl-C comes during set-up. */
  race<T>(p: Promise<T>): Promise<T> {
    const signal = this.setupAbort.signal;
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
    });
  }
}
