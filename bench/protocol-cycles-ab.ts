/**
 * Server CPU per protocol cycle (SQLite), two builds side by side: a `deltaci server` from this
 * checkout (B) and one from another checkout (A, `--base DIR`, built with `npm run build`; default:
 * this one, an A/A run that shows the noise floor). Both servers stay up, warm, and take turns:
 * ROUNDS rounds of CYCLES cycles each, A then B, then B then A, ... so that both see the same
 * load from whatever else runs on the machine; the figure is each side's median CPU ms per cycle
 * (/proc, the server process) over the rounds. Cycle as in protocol-cycles.ts, 16 runners.
 * Usage: tsx bench/protocol-cycles-ab.ts [rounds=6] [cycles=1000] [--base DIR] [--durability full|normal] [--warmup N=2000]
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { performance } from "node:perf_hooks";
import { waitForReadyUrl } from "../test/support/ready-url.ts";
import { prepareCycles, runCycles } from "./lib/cycles.ts";
import { Client, processCpuMs, ROOT } from "./lib/protocol-client.ts";

const CONC = 16;
const flag = (name: string, dflt: string): string => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
};
const flagged = new Set(["--base", "--durability", "--warmup"].flatMap((f) => {
  const i = process.argv.indexOf(f);
  return i >= 0 ? [i, i + 1] : [];
}));
const ARGS = process.argv.slice(2).filter((_, i) => !flagged.has(i + 2));
const ROUNDS = Number(ARGS[0] ?? 6);
const CYCLES = Number(ARGS[1] ?? 1000);
const BASE = resolve(flag("--base", ROOT));
const DURABILITY = flag("--durability", "full");
const WARMUP = Number(flag("--warmup", "2000"));

interface Side {
  root: string;
  proc: ChildProcess;
  client: Client;
  dir: string;
  sessions: string[];
  used: number;
  rounds: Array<{ cpuMsPerCycle: number; cyclesPerSec: number; load: number }>;
}

async function startSide(root: string): Promise<Side> {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-ab-"));
  const proc = spawn(process.execPath, [join(root, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", dir, "--log-level", "warn", "--durability", DURABILITY, "--lease-ttl", "5m"], {
    cwd: root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: "", DELTACI_CONTROLLER_TOKEN: "" },
  });
  const client = new Client(await waitForReadyUrl(proc));
  const tokens = {
    apiToken: (await readFile(join(dir, "api-token"), "utf8")).trim(),
    controllerToken: (await readFile(join(dir, "controller-token"), "utf8")).trim(),
  };
  const sessions = await prepareCycles(client, tokens, WARMUP + ROUNDS * CYCLES);
  return { root, proc, client, dir, sessions, used: 0, rounds: [] };
}

async function cycles(s: Side, n: number): Promise<number> {
  const batch = s.sessions.slice(s.used, s.used + n);
  s.used += n;
  return runCycles([s.client], batch, CONC);
}

async function stopSide(s: Side): Promise<void> {
  await s.client.close();
  if (s.proc.exitCode === null && s.proc.signalCode === null) {
    const exited = new Promise<void>((r) => s.proc.once("exit", () => r()));
    s.proc.kill("SIGTERM");
    await exited;
  }
  await rm(s.dir, { recursive: true, force: true });
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((x, y) => x - y);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

async function main(): Promise<void> {
  const a = await startSide(BASE);
  const b = await startSide(ROOT);
  let errors = 0;
  try {
    errors += (await cycles(a, WARMUP)) + (await cycles(b, WARMUP));
    for (let r = 0; r < ROUNDS; r++) {
      for (const s of r % 2 === 0 ? [a, b] : [b, a]) {
        const cpu0 = processCpuMs(s.proc.pid as number);
        const t = performance.now();
        errors += await cycles(s, CYCLES);
        const secs = (performance.now() - t) / 1000;
        s.rounds.push({
          cpuMsPerCycle: Math.round(((processCpuMs(s.proc.pid as number) - cpu0) / CYCLES) * 1000) / 1000,
          cyclesPerSec: Math.round(CYCLES / secs), load: loadavg()[0] as number,
        });
      }
    }
  } finally {
    await stopSide(a);
    await stopSide(b);
  }
  const side = (s: Side) => ({
    root: s.root, cpuMsPerCycleMedian: median(s.rounds.map((x) => x.cpuMsPerCycle)), cyclesPerSecMedian: median(s.rounds.map((x) => x.cyclesPerSec)), rounds: s.rounds,
  });
  const bWins = a.rounds.filter((x, i) => (b.rounds[i]?.cpuMsPerCycle ?? Infinity) < x.cpuMsPerCycle).length;
  process.stdout.write(JSON.stringify({
    bench: "protocol-cycles-ab", durability: DURABILITY, concurrency: CONC, rounds: ROUNDS, cyclesPerRound: CYCLES, warmupCycles: WARMUP, errors,
    a: side(a), b: side(b), roundsWhereBUsedLessCpu: bWins,
  }) + "\n");
}

await main();
