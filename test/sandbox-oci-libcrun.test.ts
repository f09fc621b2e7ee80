/**
 * crun's `run -d` done by libcrun in the resident spawner (native/crun-builtin.h) makes the same
 * container as the crun binary: the job's process sees the same capabilities, seccomp filter,
 * no_new_privs, AppArmor label, namespaces, id maps, mounts, limits and cgroups. Skipped where
 * libcrun cannot be linked (crun is not Debian 12's 1.8.1).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import { containerName } from "../src/sandbox/job-names.ts";
import { detectCgroupLayout, JobCgroup } from "../src/sandbox/oci/cgroups.ts";
import { buildSpawner, libcrunLink } from "../src/sandbox/oci/native-tools.ts";
import { ociTestEnv, tempRoot } from "./support/sandbox-harness.ts";

/** What a job's process can learn of its confinement; the job's own names and ids are masked. */
const FINGERPRINT = [
  "grep -E '^(Cap|NoNewPrivs|Seccomp|Speculation|Umask)' /proc/self/status /proc/1/status",
  "cat /proc/self/attr/current",
  "ls /proc/self/ns",
  "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups /proc/self/cgroup",
  "awk '{ print $5, $6, $9, $10, $11 }' /proc/self/mountinfo",
  "ulimit -a",
  "hostname; id",
  "ls -l /proc/1/fd | awk '{ print $9, $10, $11 }'",
  "tr '\\0' '\\n' < /proc/1/environ | sort",
].map((c) => `{ ${c}; } 2>&1 || echo "failed: $?"; echo ---`).join("\n"); // steps run with -e

const realCrun = execFileSync("sh", ["-c", "command -v crun"], { encoding: "utf8" }).trim();

void describe("oci sandbox with libcrun in the spawner", { timeout: 300_000 }, () => {
  void it("starts the same container as `crun run`; a link to the package's crun is built in", async (t) => {
    const link = await libcrunLink(realCrun);
    if (!("flags" in link)) {
      t.skip(`libcrun cannot be linked: ${link.reason}`);
      return;
    }
    const seen: Record<string, string> = {};
    const calls: Record<string, string[]> = {};
    const builtin: Record<string, boolean> = {};
    const dir = tempRoot("crun-wrapper");
    try {
      for (const libcrun of [false, true]) {
        // without libcrun, a crun that logs its command lines (what ran as crun); with it, a link
        // to the package's crun (a wrapper would run as itself: test/native-tools-libcrun)
        const log = join(dir, `calls-${libcrun}`);
        writeFileSync(log, "");
        const crun = join(dir, `linked-crun-${libcrun}`); // not crun-NAME: crun takes a handler from such a name
        if (libcrun) symlinkSync(realCrun, crun);
        else writeFileSync(crun, `#!/bin/sh\necho "$*" >> ${log}\nexec ${realCrun} "$@"\n`, { mode: 0o755 });
        const env = ociTestEnv(undefined, { libcrun, crunPath: crun });
        const spec = env.spec();
        try {
          const sb = await env.factory.create(spec);
          try {
            const r = await runStep(sb, FINGERPRINT);
            assert.equal(r.result.exitCode, 0, r.stderr.toString() + r.stdout.toString());
            // the job's cgroup (its limits) holds the container's init
            const cgroup = new JobCgroup(detectCgroupLayout(), `/deltaci/slot-${spec.slot.index}/${containerName(spec.slot.index, spec.jobId)}`);
            assert.equal((await cgroup.pids()).length, 1);
            seen[String(libcrun)] = r.stdout
              .toString()
              .replaceAll(containerName(spec.slot.index, spec.jobId), "CONTAINER")
              .replaceAll(spec.jobId, "JOB")
              .replaceAll(`slot-${spec.slot.index}`, "slot-N")
              .replaceAll(String(spec.slot.hostUidBase), "UIDBASE")
              .replace(/\/dev\/loop\d+/g, "/dev/loopN")
              .replace(/[ \t]+/g, " ");
          } finally {
            await sb.dispose();
          }
          assert.deepEqual(await env.leftovers(spec), []);
        } finally {
          await env.cleanup();
          // the spawner built for this crun path (the path is part of its key: no later run finds it)
          const spawner = await buildSpawner("/var/cache/deltaci", libcrun ? crun : null);
          builtin[String(libcrun)] = spawner.builtinCrun;
          if (spawner.builtinCrun) rmSync(spawner.dir, { recursive: true, force: true });
        }
        // each command's verb: its first word that is not an option or a path
        calls[String(libcrun)] = readFileSync(log, "utf8").trim().split("\n").map((l) => l.split(" ").find((w) => !w.startsWith("-") && !w.startsWith("/")) ?? l);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(seen.true, seen.false);
    assert.match(seen.true ?? "", /Seccomp:\s+2/);
    assert.ok(calls.false?.includes("run"), `crun ran: ${calls.false?.join(", ")}`);
    // the built-in took run -d (that no crun runs for it: resident-spawner.test's strace)
    assert.deepEqual(builtin, { false: false, true: true });
  });
});
