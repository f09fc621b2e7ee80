/**
 * Making a job disk image, three ways, round-robin in the same run: `truncate` + `mkfs.ext4` per
 * job (the baseline, what the sandbox did before), `cp --sparse=always` of a formatted template,
 * and the template pack written by the disk tool (`disk-tool write`, what the runner does now, as
 * part of `write-mount`). Prints JSON: wall p50/p90 per way and this process's CPU (children,
 * the disk tool included, not counted).
 * Usage: tsx bench/job-disk.ts [sizeMiB=1024] [runs=20]
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { defaults } from "../src/config/defaults.ts";
import { DiskTemplates, MKFS_ARGS } from "../src/sandbox/oci/disk-template.ts";
import { buildDiskTool } from "../src/sandbox/oci/native-tools.ts";

const run = promisify(execFile);
const sizeMiB = Number(process.argv[2] ?? 1024);
const runs = Number(process.argv[3] ?? 20);

async function main() {
  const cacheDir = defaults.sandboxCacheDir;
  const tool = (await buildDiskTool(cacheDir)).path;
  const templates = new DiskTemplates(join(cacheDir, "disk-templates"), async () => tool);
  const dir = mkdtempSync(join(tmpdir(), "deltaci-job-disk-"));
  try {
    const { pack, runs: packRuns } = await templates.writeArgs(sizeMiB); // also makes the pack once
    const writePack = (f: string) => run(tool, ["write", ...pack, f, ...packRuns]);
    await writePack(join(dir, "formatted.img"));
    const ways: Record<string, (file: string) => Promise<unknown>> = {
      "truncate + mkfs.ext4 (baseline)": async (f) => {
        writeFileSync(f, "");
        truncateSync(f, sizeMiB * 1024 * 1024);
        await run("mkfs.ext4", [...MKFS_ARGS, f]);
      },
      "cp --sparse=always of a template": (f) => run("cp", ["--sparse=always", join(dir, "formatted.img"), f]),
      "template pack written by the disk tool (chosen)": writePack,
    };
    const wall: Record<string, number[]> = {};
    const cpu: Record<string, number[]> = {};
    for (let i = 0; i < runs; i++) {
      for (const [name, make] of Object.entries(ways)) {
        const file = join(dir, `${i}.img`);
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await make(file);
        (wall[name] ??= []).push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        (cpu[name] ??= []).push((c.user + c.system) / 1000);
        rmSync(file);
      }
    }
    const q = (xs: number[], p: number) => Number(([...xs].sort((a, b) => a - b)[Math.floor(p * xs.length)] ?? NaN).toFixed(2));
    const out = {
      bench: "job-disk",
      sizeMiB,
      runs,
      unit: "ms",
      loadAverage1m: Number(loadavg()[0]?.toFixed(2)),
      wall: Object.fromEntries(Object.entries(wall).map(([k, v]) => [k, { p50: q(v, 0.5), p90: q(v, 0.9) }])),
      nodeCpuP50: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, q(v, 0.5)])),
    };
    process.stdout.write(JSON.stringify(out) + "\n");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${String(e instanceof Error ? e.stack : e)}\n`);
  process.exit(1);
});
