/**
 * crun built into the resident spawner (libcrun, native/crun-builtin.h) against the crun binary
 * exec'd by it: a cold sandbox's create + first step `true` + dispose + its background teardown,
 * alternated between two factories that differ only in `libcrun`, in the same process. CPU per
 * cycle: this process's own plus that of its live children (the two spawners: their time and what
 * they reaped, crun, the container's init and step), from /proc, in clock ticks (10 ms: read
 * over many cycles). Wall p50 of the create + step + dispose and of the create's `crun run -d`
 * phase. No spare disks (their background work would spill into the other variant's cycle). Prints JSON. Usage: tsx bench/crun-builtin.ts [runs=40]
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { slotInfo } from "../src/sandbox/slots.ts";
import { baseSpec } from "../test/support/sandbox-harness.ts";

const runs = Number(process.argv[2] ?? 40);
const TICK_MS = 10; // CLK_TCK 100
const root = mkdtempSync(join(tmpdir(), "deltaci-bench-"));
chmodSync(root, 0o755); // the sandbox's unprivileged uids traverse it
const logger = { info: () => {}, warn: (_f: Record<string, unknown>, m: string) => process.stderr.write(`warn: ${m}\n`) };

/** This process's CPU ms, and its live children's (their own and their reaped children's). */
function cpuMs(): number {
  const self = process.cpuUsage();
  let ticks = 0;
  for (const tid of readdirSync("/proc/self/task")) {
    for (const pid of readFileSync(`/proc/self/task/${tid}/children`, "utf8").trim().split(/\s+/).filter(Boolean)) {
      try {
        const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
        ticks += [11, 12, 13, 14].reduce((s, i) => s + Number(f[i] ?? 0), 0); // utime stime cutime cstime
      } catch {}
    }
  }
  return (self.user + self.system) / 1000 + ticks * TICK_MS;
}

const p50 = (xs: number[]) => Number(([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN).toFixed(2));

interface Variant {
  factory: CrunSandboxFactory;
  slotIndex: number;
  totalMs: number[];
  crunRunMs: number[];
  cpuMs: number;
}

function variant(libcrun: boolean, slotIndex: number): Variant {
  const v: Variant = { factory: null as unknown as CrunSandboxFactory, slotIndex, totalMs: [], crunRunMs: [], cpuMs: 0 };
  v.factory = new CrunSandboxFactory({ clock: systemClock, logger, libcrun, trace: (phase, ms) => phase === "create: crun run -d" && v.crunRunMs.push(ms) });
  return v;
}


async function cycle(v: Variant, i: number, measure: boolean): Promise<void> {
  const s = baseSpec(slotInfo(v.slotIndex, join(root, "slots")), { jobId: `crun-builtin-${process.pid}-${v.slotIndex}-${i}` });
  const c0 = cpuMs();
  const t0 = performance.now();
  const sb = await v.factory.create(s);
  const r = await sb.start({ run: "true", shell: "sh", env: {}, workingDirectory: null, timeoutMs: 60_000 }, { stdout: () => {}, stderr: () => {} }).done;
  if (r.exitCode !== 0) throw new Error(`step failed: ${JSON.stringify(r)}`);
  await sb.dispose();
  const t1 = performance.now();
  await v.factory.settle(s.slot);
  if (!measure) return;
  v.totalMs.push(t1 - t0);
  v.cpuMs += cpuMs() - c0;
}

async function main() {
  const base = 43_000 + (process.pid % 1000);
  const variants = { builtin: variant(true, base), exec: variant(false, base + 1000) };
  const load = [loadavg()[0]];
  try {
    for (let i = -3; i < runs; i++) {
      if (i === 0) for (const v of Object.values(variants)) v.crunRunMs.length = 0;
      const order = i % 2 === 0 ? [variants.builtin, variants.exec] : [variants.exec, variants.builtin];
      for (const v of order) await cycle(v, i, i >= 0);
    }
    load.push(loadavg()[0]);
    const out = Object.fromEntries(
      Object.entries(variants).map(([name, v]) => [name, { n: v.totalMs.length, createStepDisposeP50Ms: p50(v.totalMs), crunRunDetachedP50Ms: p50(v.crunRunMs), cpuMsPerCycle: Number((v.cpuMs / v.totalMs.length).toFixed(1)) }]),
    );
    process.stdout.write(`${JSON.stringify({ bench: "crun-builtin", runs, loadAverage1m: load, ...out })}\n`);
  } finally {
    for (const v of Object.values(variants)) {
      await v.factory.reapSlot(slotInfo(v.slotIndex, join(root, "slots")));
      await v.factory.close();
    }
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
