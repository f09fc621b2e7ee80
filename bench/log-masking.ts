/**
 * CPU of the runner's secret masker on a log flood: N MiB of 64 KiB chunks of an ordinary log line
 * through one SecretMasker, with no secret (the baseline: the token search and the held tail
 * only), one, five of common shapes (password, GitHub and AWS tokens), and a PEM-like multi-line
 * key. Milliseconds of CPU per 100 MiB, median over rounds, the load average beside them.
 * Prints one JSON document. Usage: tsx bench/log-masking.ts [MiB=100] [--rounds N=3]
 */
import { loadavg } from "node:os";
import { SecretMasker } from "../src/logs/secret-masker.ts";

const args = process.argv.slice(2);
const roundsIdx = args.indexOf("--rounds");
const rounds = roundsIdx >= 0 ? Number(args.splice(roundsIdx, 2)[1]) : 3;
const MiB = Number(args[0] ?? 100);
const CHUNK = 64 * 1024;
const line = "2026-11-28T03:00:00.000Z INFO build step output line with some ordinary text 0123456789\n";
const source = Buffer.from(line.repeat(Math.ceil((CHUNK * 8) / line.length)));
const chunks = Array.from({ length: 64 }, (_, i) => {
  const off = (i * 7919) % (source.length - CHUNK);
  return Buffer.from(source.subarray(off, off + CHUNK));
});
const pemBody = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj";
const sets: Record<string, string[]> = {
  none: [],
  one: ["s3cret-value-in-env"],
  five: ["s3cret-value-in-env", "ghp_R4nd0mT0kenV4lue0123456789abcdefABCD", "AKIAIOSFODNN7EXAMPLE", "hunter2-password!", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"],
  pem: [`-----BEGIN PRIVATE KEY-----\n${pemBody}\n${pemBody.replace("j", "B")}\n-----END PRIVATE KEY-----`],
};

function once(secrets: string[]): number {
  const m = new SecretMasker(secrets);
  let out = 0;
  const c0 = process.cpuUsage();
  for (let i = 0; i * CHUNK < MiB * 1024 * 1024; i++) out += m.write(chunks[i % chunks.length] as Buffer).length;
  out += m.end().length;
  const c = process.cpuUsage(c0);
  if (out !== MiB * 1024 * 1024) throw new Error(`masked ${out} bytes of ${MiB} MiB: the text holds no secret`);
  return ((c.user + c.system) / 1000) * (100 / MiB);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const runs: Record<string, number[]> = {};
const load0 = loadavg()[0];
for (let r = 0; r < rounds; r++) for (const [name, secrets] of Object.entries(sets)) (runs[name] ??= []).push(once(secrets));
process.stdout.write(JSON.stringify({
  bench: "log-masking", mib: MiB, rounds,
  cpuMsPer100MiB: Object.fromEntries(Object.entries(runs).map(([k, v]) => [k, Math.round(median(v))])),
  loadAverage1m: [load0, loadavg()[0]],
  note: "one SecretMasker, 64 KiB chunks of a log line holding no secret; `none` is the baseline (token search and held tail only)",
}) + "\n");
