/**
 * One step of a crun job, run by the container's init over its control channel: init runs the
 * script in its own session and relays its output and its end. The step's process tree is every
 * process in the job's cgroup except init (pid 1): it is signalled from the host, so daemonized
 * children cannot escape it. When the script ends, whatever it left behind is killed before
 * `done` resolves.
 */
import { constants } from "node:os";
import { WAIT_CALLED_OFF, type Clock } from "../../base/clock.ts";
import { StepControl } from "../step-control.ts";
import type { LimitReason, StepOutput, StepProcess, StepResult } from "../types.ts";
import { readKernelFile, type JobCgroup, type LimitCounters } from "./cgroups.ts";
import type { InitChannel, StepRequest } from "./init-channel.ts";

export interface CrunStepContext {
  channel: InitChannel;
  cgroup: JobCgroup;
  clock: Clock;
  /** Index of the container's pid in /proc/<pid>/status `NSpid` (our own pid-namespace depth). */
  nsLevel: number;
  timeoutGraceMs: number;
  /** Names the limit that a failed step hit, given the cgroup counters before and after. */
  explain(before: LimitCounters, after: LimitCounters): Promise<{ reason: LimitReason; message: string } | null>;
}

const signalNames = new Map<number, string>(Object.entries(constants.signals).map(([name, num]) => [num, name]));

/** Synchronous: a small procfs read is cheaper than a thread-pool round trip (and its 64 KiB buffer). */
function containerPid(hostPid: number, level: number): number | null {
  const line = readKernelFile(`/proc/${hostPid}/status`).split("\n").find((l) => l.startsWith("NSpid:"));
  const v = line?.split(/\s+/)[level + 1];
  return v === undefined ? null : Number(v);
}

/** Signals every process of the job but init; returns how many were signalled. Stops once `until` is aborted. */
export async function signalJobProcesses(ctx: Pick<CrunStepContext, "cgroup" | "nsLevel">, sig: NodeJS.Signals, until?: AbortSignal): Promise<number> {
  let n = 0;
  for (const pid of await ctx.cgroup.pids()) {
    const inner = containerPid(pid, ctx.nsLevel);
    if (until?.aborted) return n;
    if (inner === null || inner === 1) continue;
    try {
      process.kill(pid, sig);
      n++;
    } catch {}
  }
  return n;
}

/** SIGKILLs the job's processes (but init) until none is left or `maxMs` passed. */
export async function killJobProcesses(ctx: Pick<CrunStepContext, "cgroup" | "nsLevel" | "clock">, maxMs = 10_000, until?: AbortSignal): Promise<void> {
  const deadline = ctx.clock.now() + maxMs;
  while ((await signalJobProcesses(ctx, "SIGKILL", until)) > 0 && ctx.clock.now() < deadline && !until?.aborted) await ctx.clock.sleep(5);
}

/** After the script's end and its leftovers' kill, 'R' must follow; a pipe held from outside the job gets drained, then the sandbox is given up. */
const END_WAIT_MS = 2_000;

async function awaitEnd(ctx: CrunStepContext, finished: Promise<void>, giveUp: () => void): Promise<void> {
  const ac = new AbortController();
  const late = (ms: number) => ctx.clock.sleep(ms, ac.signal).then(() => true, () => false);
  try {
    if (!(await Promise.race([finished.then(() => false), late(END_WAIT_MS)]))) return;
    ctx.channel.drain();
    if (!(await Promise.race([finished.then(() => false), late(END_WAIT_MS)]))) return;
    ctx.channel.close(); // init does not answer: the sandbox cannot run another step
    giveUp();
  } finally {
    ac.abort(WAIT_CALLED_OFF);
  }
}

/**
 * Sends the step's request before it returns (nothing before it awaits, so what the caller sets
 * off next goes after it). `before`: the job cgroup's limit counters with no step running (what
 * a limit this step hits raises).
 */
export function startCrunStep(ctx: CrunStepContext, request: StepRequest, timeoutMs: number, output: StepOutput, before: LimitCounters): StepProcess {
  let over = false;
  let status = "";
  // a stop's signalling must end with the step: the next step's processes are in the same cgroup
  const stepOver = new AbortController();
  const control = new StepControl(
    ctx.clock,
    {
      terminate: () => void signalJobProcesses(ctx, "SIGTERM", stepOver.signal),
      kill: () => void killJobProcesses(ctx, 10_000, stepOver.signal),
    },
    timeoutMs,
    ctx.timeoutGraceMs,
  );
  const started = ctx.clock.now();
  const done = (async (): Promise<StepResult> => {
    let leftovers: Promise<void> = Promise.resolve();
    let sawEnd!: () => void;
    const finished = new Promise<void>((resolve) => {
      sawEnd = resolve;
      if (control.stopped || control.timedOut) {
        resolve(); // stopped before it started: never run it
        return;
      }
      ctx.channel.run(request, {
        frame: (type, data) => {
          // a view of the channel's reused read buffer: consumed in this call
          if (type === "O") output.stdout(data);
          else if (type === "E") output.stderr(data);
          else if (type === "S") {
            status = data.toString("latin1");
            over = true;
            // what the script left behind may hold its pipes open: end it, so that init finishes the step
            leftovers = killJobProcesses(ctx).then(() =>
              awaitEnd(ctx, finished, () => {
                output.stderr(Buffer.from("deltaci: the sandbox's init did not finish the step after its end; the sandbox was given up\n"));
                sawEnd();
              }),
            );
          } else if (type === "R") resolve();
        },
        closed: () => resolve(),
      });
    });
    await finished;
    over = true;
    // after 'S' the leftovers were killed before init could report 'R'; without it, init is gone
    await (status !== "" ? leftovers : killJobProcesses(ctx));
    control.finish();
    stepOver.abort(WAIT_CALLED_OFF);
    const sig = /^signal (\d+)$/.exec(status);
    const code = /^exit (\d+)$/.exec(status);
    let exitCode: number | null = code ? Number(code[1]) : null;
    let signal: string | null = sig ? (signalNames.get(Number(sig[1])) ?? `SIG${sig[1]}`) : null;
    if (!sig && !code) {
      // init died (the OOM killer, a disposal) before the script's end was seen
      exitCode = null;
      signal = "SIGKILL";
    }
    const failed = exitCode !== 0 || signal !== null;
    // A hit limit is the cause even when the step then ran into its timeout (a fork bomb never ends).
    let limit = failed && !control.stopped ? await ctx.explain(before, await ctx.cgroup.counters()) : null;
    if (limit === null && control.timedOut) limit = { reason: "timeout", message: `step timeout of ${timeoutMs} ms exceeded` };
    return { exitCode, signal, durationMs: ctx.clock.now() - started, limit, stopped: control.stopped };
  })();
  return {
    done,
    stop: (graceMs: number) => {
      if (!over) control.stop(graceMs);
    },
  };
}
