/**
 * What a real log gap costs the runner's upload: the runner believes the server holds bytes it
 * never got (as after a server lost unsynced bytes), so its next PUTs start past the server's
 * `committed`; the server holds them (≤ 2 s, never past the lease), answers 416, and the
 * uploader resends from `committed`. Measured: the time to upload the same tail (1 MiB by
 * default) with and without the gap, interleaved, several rounds; medians and the difference.
 * The real server over loopback, the real RunnerClient and LogUploader. Prints one JSON document.
 * Usage: tsx bench/log-gap.ts [rounds] [tailKiB]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { systemClock } from "../src/base/clock.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { RunnerClient } from "../src/client/runner-client.ts";
import { LogSpool } from "../src/logs/log-spool.ts";
import { LogUploader } from "../src/logs/log-uploader.ts";
import { startServer } from "../src/server/index.ts";
import { capabilities, jobSpec } from "../test/server-harness.ts";

const rounds = Number(process.argv[2] ?? 5);
const tailBytes = Number(process.argv[3] ?? 1024) * 1024;
const dir = mkdtempSync(join(tmpdir(), "deltaci-bench-log-gap-"));
const srv = await startServer({ dataDir: join(dir, "server"), host: "127.0.0.1", port: 0, durability: "normal" });
const http = new HttpClient(srv.url, { timeoutMs: 10_000 });
const client = new RunnerClient({ http, retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: 10_000 });

async function api<T>(method: "POST" | "GET", path: string, token: string, json?: unknown): Promise<T> {
  return (await http.call<T>({ method, path, token, ...(json === undefined ? {} : { json }) })).body;
}

/** A fresh job's lease token. */
async function leaseOne(): Promise<string> {
  await api("POST", "/v1/jobs", srv.apiToken, { spec: jobSpec(), fork: false });
  const { tokens } = await api<{ tokens: string[] }>("POST", "/v1/controller/registrations", srv.controllerToken, { count: 1, labels: [] });
  const reg = await api<{ sessionToken: string }>("POST", "/v1/runner/register", tokens[0] ?? "", { name: "bench", version: "1", capabilities: capabilities() });
  const res = await http.call<{ lease: { leaseToken: string } }>({ method: "POST", path: "/v1/runner/lease", token: reg.sessionToken, json: { waitMs: 1000 } });
  return res.body.lease.leaseToken;
}

/** Uploads a 64 KiB head, then a tail of `tailBytes`, with or without a gap before the tail; ms for the tail. */
async function once(gap: boolean, n: number): Promise<number> {
  const token = await leaseOne();
  const spool = new LogSpool(join(dir, `spool-${n}`), 1 << 30);
  const sink = { put: (start: number, bytes: Uint8Array, signal: AbortSignal) => client.putLog(token, start, bytes, { signal }) };
  const up = new LogUploader({ spool, sink, clock: systemClock, flushIntervalMs: 250, flushBytes: 256 * 1024, chunkBytes: 256 * 1024 });
  spool.append(Buffer.alloc(64 * 1024, 0x61));
  await up.finish(AbortSignal.timeout(30_000));
  spool.append(Buffer.alloc(tailBytes, 0x62));
  // rewind() also re-arms a finished uploader: to the truth (no gap), or 16 KiB past it (a gap).
  up.rewind(64 * 1024 + (gap ? 16 * 1024 : 0));
  const t0 = performance.now();
  const r = await up.finish(AbortSignal.timeout(30_000));
  const ms = performance.now() - t0;
  if (!r.complete) throw new Error(`upload incomplete (gap ${gap}): ${r.bytes} of ${spool.size}, ${up.stopped}: ${String(up.error)}`);
  spool.close();
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const base: number[] = [];
const withGap: number[] = [];
try {
  for (let i = 0; i < rounds; i++) {
    base.push(await once(false, 2 * i));
    withGap.push(await once(true, 2 * i + 1));
  }
  const r = (x: number) => Math.round(x * 10) / 10;
  process.stdout.write(`${JSON.stringify({
    bench: "log-gap", rounds, tailKiB: tailBytes / 1024,
    tailUploadMs: { baselineMedian: r(median(base)), withGapMedian: r(median(withGap)), gapCostMedian: r(median(withGap) - median(base)), withGapMax: r(Math.max(...withGap)) },
    loadavg: loadavg().map((x) => Math.round(x * 100) / 100),
  })}\n`);
} finally {
  await client.close();
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
}
