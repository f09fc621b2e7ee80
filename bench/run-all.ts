/**
 * Runs every bench/*.ts (except this file) one after another, each in its own process, and
 * prints one JSON array of their JSON outputs (each bench prints one JSON document on stdout).
 * Usage: tsx bench/run-all.ts [name-filter]
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { basename, join } from "node:path";

const dir = import.meta.dirname;
const self = basename(import.meta.filename);
const filter = process.argv[2];
const files = readdirSync(dir).filter((f) => f.endsWith(".ts") && f !== self && (!filter || f.includes(filter))).sort();
const results: unknown[] = [];
for (const f of files) {
  process.stderr.write(`bench: ${f}\n`);
  const r = spawnSync(process.execPath, ["--import", "tsx", join(dir, f)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], maxBuffer: 64 * 1024 * 1024 });
  const out = (r.stdout ?? "").trim();
  try {
    const docs = out.split("\n").filter((l) => l.trim().startsWith("{") || l.trim().startsWith("[")).map((l) => JSON.parse(l) as unknown);
    results.push(...(docs.length > 0 ? docs : [{ bench: f, error: `no JSON output (exit ${r.status})` }]));
  } catch (err) {
    results.push({ bench: f, error: `unparsable output: ${(err as Error).message}`, exit: r.status });
  }
}
process.stdout.write(JSON.stringify(results, null, 2) + "\n");
