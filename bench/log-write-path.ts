/**
 * The runner's side of a log flood, in one process, without a step or a server: N MiB of pipe-sized
 * chunks (64 KiB, a fresh buffer each, as a pipe read gives) of an ordinary log line go through a
 * JobLog stream (`::add-mask::` filter, secret masker with one secret), the spool and the
 * LogUploader (which hashes what is committed) to a sink that only answers. Baseline in the same
 * run: the floor of that path, the same chunks hashed (sha256) and written to a file. CPU seconds
 * (user, system) per 100 MiB of each, median over rounds, alternating; the load average beside them.
 * Prints one JSON document. Usage: tsx bench/log-write-path.ts [MiB=200] [--rounds N=3]
 */
import { createHash } from "node:crypto";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/base/clock.ts";
import { JobLog } from "../src/logs/job-log.ts";
import { LogSpool } from "../src/logs/log-spool.ts";
import { LogUploader, type LogSink } from "../src/logs/log-uploader.ts";

const MiB = 1024 * 1024;
const args = process.argv.slice(2);
const roundsIdx = args.indexOf("--rounds");
const rounds = roundsIdx >= 0 ? Number(args.splice(roundsIdx, 2)[1]) : 3;
const total = Number(args[0] ?? 200) * MiB;
const CHUNK = 64 * 1024;
const line = "2026-11-28T03:00:00.000Z INFO build step output line with some ordinary text 0123456789\n";
const source = Buffer.from(line.repeat(Math.ceil((CHUNK * 8) / line.length)));
const dir = mkdtempSync(join(tmpdir(), "deltaci-bench-log-write-"));

/** The next pipe-sized chunk, a fresh buffer each. */
function chunkAt(i: number): Buffer {
  const off = (i * CHUNK) % (source.length - CHUNK);
  return Buffer.from(source.subarray(off, off + CHUNK));
}

async function measure(run: () => Promise<void>): Promise<{ seconds: number; userS: number; sysS: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await run();
  const cpu = process.cpuUsage(c0);
  return { seconds: (performance.now() - t0) / 1000, userS: cpu.user / 1e6, sysS: cpu.system / 1e6 };
}

async function logPath(round: number): Promise<void> {
  const spool = new LogSpool(join(dir, `spool-${round}`), total + MiB);
  const sink: LogSink = {
    put: async (start, bytes) => {
      await new Promise((r) => setImmediate(r)); // an answer comes back on a later turn
      return { status: "accepted", committed: start + bytes.length };
    },
  };
  const uploader = new LogUploader({ spool, sink, clock: systemClock, flushIntervalMs: 250, flushBytes: 256 * 1024, chunkBytes: 4 * MiB });
  uploader.start();
  const log = new JobLog(spool, ["s3cret-value-in-env"]);
  const out = log.stream();
  for (let i = 0; i * CHUNK < total; i++) {
    out.write(chunkAt(i));
    if (i % 64 === 63) await new Promise((r) => setImmediate(r)); // let the uploader run, as pipe reads do
  }
  out.end();
  const s = await uploader.finish(AbortSignal.timeout(120_000));
  if (!s.complete || s.bytes !== total) throw new Error(`uploaded ${s.bytes} of ${total}`);
  spool.close();
  rmSync(spool.path, { force: true });
}

async function floor(round: number): Promise<void> {
  const path = join(dir, `floor-${round}`);
  const fd = openSync(path, "w");
  const h = createHash("sha256");
  for (let i = 0; i * CHUNK < total; i++) {
    const c = chunkAt(i);
    h.update(c);
    writeSync(fd, c);
  }
  h.digest();
  closeSync(fd);
  rmSync(path, { force: true });
}

const per100 = (x: number) => +((x * 100 * MiB) / total).toFixed(3);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const results: Record<"logPath" | "floor", Array<{ seconds: number; userS: number; sysS: number }>> = { logPath: [], floor: [] };
const load0 = loadavg()[0];
try {
  for (let r = 0; r < rounds; r++) {
    results.logPath.push(await measure(() => logPath(r)));
    results.floor.push(await measure(() => floor(r)));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
const summary = (rs: Array<{ seconds: number; userS: number; sysS: number }>) => ({
  mbPerS: +(total / 1e6 / median(rs.map((x) => x.seconds))).toFixed(1),
  userSPer100MiB: per100(median(rs.map((x) => x.userS))),
  sysSPer100MiB: per100(median(rs.map((x) => x.sysS))),
});
process.stdout.write(JSON.stringify({
  bench: "log-write-path", bytes: total, rounds,
  logPath: summary(results.logPath),
  baselineHashAndWrite: summary(results.floor),
  loadAverage1m: [load0, loadavg()[0]],
  note: "CPU of this one process; medians over rounds; the log path includes the uploader's sha256, the baseline is sha256 + a file write of the same chunks",
}) + "\n");
