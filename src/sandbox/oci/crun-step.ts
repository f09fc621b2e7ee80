/**
 * One step of a crun job: `crun exec` of the sandbox helper's `step` wrapper, which runs the
 * script in its own session and reports its pid and exit status on fd 3. The step's process
 * tree is every process in the job's cgroup except the container's init (pid 1) and the
 * wrapper: it is signalled from the host, so daemonized children cannot escape it. When the
 * script ends, whatever it left behind is killed before `done` resolves.
 */
import { constants } from "node:os";
import { readFile } from "node:fs/promises";
import { PassThrough, type Readable } from "node:stream";
import type { Clock } from "../../base/clock.ts";
import { StepControl } from "../step-control.ts";
import type { LimitReason, StepProcess, StepResult } from "../types.ts";
import type { JobCgroup, LimitCounters } from "./cgroups.ts";
import type { CrunCli } from "./crun-cli.ts";

export interface CrunStepContext {
  crun: CrunCli;
  containerId: string;
  cgroup: JobCgroup;
  clock: Clock;
  /** Index of the container's pid in /proc/<pid>/status `NSpid` (our own pid-namespace depth). */
  nsLevel: number;
  timeoutGraceMs: number;
  /** Names the limit that a failed step hit, given the cgroup counters before and after. */
  explain(before: LimitCounters, after: LimitCounters): Promise<{ reason: LimitReason; message: string } | null>;
}

const signalNames = new Map<number, string>(Object.entries(constants.signals).map(([name, num]) => [num, name]));

async function containerPid(hostPid: number, level: number): Promise<number | null> {
  const text = await readFile(`/proc/${hostPid}/status`, "utf8").catch(() => null);
  const line = text?.split("\n").find((l) => l.startsWith("NSpid:"));
  const v = line?.split(/\s+/)[level + 1];
  return v === undefined ? null : Number(v);
}

/** Signals every process of the job but init and `spare`; returns how many were signalled. */
export async function signalJobProcesses(ctx: Pick<CrunStepContext, "cgroup" | "nsLevel">, sig: NodeJS.Signals, spare: number | null): Promise<number> {
  let n = 0;
  for (const pid of await ctx.cgroup.pids()) {
    const inner = await containerPid(pid, ctx.nsLevel);
    if (inner === null || inner === 1 || inner === spare) continue;
    try {
      process.kill(pid, sig);
      n++;
    } catch {}
  }
  return n;
}

/** SIGKILLs the job's processes (but init and `spare`) until none is left or `maxMs` passed. */
export async function killJobProcesses(ctx: Pick<CrunStepContext, "cgroup" | "nsLevel" | "clock">, spare: number | null, maxMs = 10_000): Promise<void> {
  const until = ctx.clock.now() + maxMs;
  while ((await signalJobProcesses(ctx, "SIGKILL", spare)) > 0 && ctx.clock.now() < until) await ctx.clock.sleep(5);
}

export function startCrunStep(ctx: CrunStepContext, processFile: string, timeoutMs: number): StepProcess {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let wrapperPid: number | null = null;
  let over = false;
  const control = new StepControl(
    ctx.clock,
    {
      terminate: () => void signalJobProcesses(ctx, "SIGTERM", wrapperPid),
      kill: () => void killJobProcesses(ctx, wrapperPid),
    },
    timeoutMs,
    ctx.timeoutGraceMs,
  );
  const started = ctx.clock.now();
  const done = (async (): Promise<StepResult> => {
    const before = await ctx.cgroup.counters();
    const child = ctx.crun.spawn(["exec", "--process", processFile, "--preserve-fds=1", ctx.containerId], ["ignore", "pipe", "pipe", "pipe"]);
    child.stdout?.pipe(stdout);
    child.stderr?.pipe(stderr);
    let status = "";
    const statusStream = child.stdio[3] as Readable | null;
    statusStream?.setEncoding("utf8");
    statusStream?.on("data", (d: string) => {
      status += d;
      const m = /^pid (\d+)$/m.exec(status);
      if (m && wrapperPid === null) {
        wrapperPid = Number(m[1]);
        if (control.stopped || control.timedOut) void killJobProcesses(ctx, wrapperPid);
      }
    });
    const exited = new Promise<number | null>((resolve) => {
      child.once("exit", (code) => resolve(code));
      child.once("error", (err) => {
        stderr.write(`deltaci: cannot run crun exec: ${err.message}\n`);
        resolve(125);
      });
    });
    const closed = new Promise<void>((resolve) => child.once("close", () => resolve()));
    const crunCode = await exited;
    over = true;
    await killJobProcesses(ctx, null);
    await closed;
    control.finish();
    const sig = /^signal (\d+)$/m.exec(status);
    const code = /^exit (\d+)$/m.exec(status);
    let exitCode: number | null = code ? Number(code[1]) : sig ? null : crunCode;
    let signal: string | null = sig ? (signalNames.get(Number(sig[1])) ?? `SIG${sig[1]}`) : null;
    if (!sig && !code && (control.stopped || control.timedOut)) {
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
    stdout,
    stderr,
    done,
    stop: (graceMs: number) => {
      if (!over) control.stop(graceMs);
    },
  };
}
