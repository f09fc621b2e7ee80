/** Reading Linux /proc: process identity (pid + start time, so a reused pid is never mistaken) and children. */
import { open, readFile, readdir, readlink } from "node:fs/promises";

export interface ProcStat {
  state: string;
  ppid: number;
  pgid: number;
  /** Start time in clock ticks since boot (field 22): with the pid, a process identity. */
  startTime: string;
}

export async function readProcStat(pid: number): Promise<ProcStat | null> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // comm (field 2) may contain spaces and parentheses: split after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { state: fields[0] ?? "?", ppid: Number(fields[1]), pgid: Number(fields[2]), startTime: fields[19] ?? "" };
}

/** True when `pid` is alive (not a zombie) and started at `startTime`. */
export async function isSameProcess(pid: number, startTime: string): Promise<boolean> {
  const st = await readProcStat(pid);
  return st !== null && st.startTime === startTime && st.state !== "Z" && st.state !== "X";
}

/** True when `pid` has a handler for signal number `signo` (the SigCgt mask of /proc/PID/status). */
export async function catchesSignal(pid: number, signo: number): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/status`, "utf8");
  } catch {
    return false;
  }
  const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(text)?.[1];
  return mask !== undefined && ((BigInt(`0x${mask}`) >> BigInt(signo - 1)) & 1n) === 1n;
}

/** Direct children of `pid` (all its threads). */
export async function childPids(pid: number): Promise<number[]> {
  const out: number[] = [];
  let tasks: string[];
  try {
    tasks = await readdir(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    try {
      const text = await readFile(`/proc/${pid}/task/${tid}/children`, "utf8");
      for (const p of text.trim().split(/\s+/)) if (p) out.push(Number(p));
    } catch {}
  }
  return out;
}

/** Pids whose command line contains `needle` (used to find a runner launched just before a crash). */
export async function findProcessesByArg(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const args = (await readFile(`/proc/${name}/cmdline`, "utf8")).split("\0");
      if (args.includes(needle)) found.push(Number(name));
    } catch {}
  }
  return found;
}

/**
 * SIGKILLs every process whose working directory lies under `dir` (what an unisolated step of a
 * dead runner leaves running: it sits in its own process group, so killing the runner's group
 * misses it). Returns `process <pid>` for each one killed.
 */
export async function killProcessesUnder(dir: string): Promise<string[]> {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const killed: string[] = [];
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    let cwd: string;
    try {
      cwd = await readlink(`/proc/${name}/cwd`);
    } catch {
      continue;
    }
    if (cwd !== dir && !cwd.startsWith(prefix)) continue;
    try {
      process.kill(Number(name), "SIGKILL");
      killed.push(`process ${name}`);
    } catch {}
  }
  return killed;
}

/** The last `bytes` of a file as text ("" when it cannot be read): a process's last words. */
export async function fileTail(path: string, bytes: number): Promise<string> {
  try {
    const f = await open(path, "r");
    try {
      const { size } = await f.stat();
      const buf = Buffer.alloc(Math.min(bytes, size));
      await f.read(buf, 0, buf.length, size - buf.length);
      return buf.toString("utf8");
    } finally {
      await f.close();
    }
  } catch {
    return "";
  }
}
