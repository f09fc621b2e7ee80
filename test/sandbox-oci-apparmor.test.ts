/**
 * The shipped AppArmor profile parses with the real apparmor_parser (compile only, no kernel), and
 * the factory applies it where AppArmor is enabled or says once that it is not (real crun).
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { runStep } from "../src/sandbox/conformance.ts";
import { jobDirName } from "../src/sandbox/job-names.ts";
import { apparmorProfileFile, DEFAULT_APPARMOR_PROFILE, PARSER_DIRS, resolveAppArmor, systemAppArmorHost } from "../src/sandbox/oci/apparmor.ts";
import type { SandboxLogger } from "../src/sandbox/types.ts";
import { ociTestEnv } from "./support/sandbox-harness.ts";

const parser = PARSER_DIRS.map((d) => join(d, "apparmor_parser")).find((p) => existsSync(p)) ?? null;
const noParser = parser === null ? "apparmor_parser is not installed (Debian package `apparmor`, installed by scripts/setup.sh)" : false;
if (noParser) console.log(`# skipping the profile syntax checks: ${noParser}`);
const kernelEnabled = (() => {
  try {
    return readFileSync("/sys/module/apparmor/parameters/enabled", "utf8").trim() === "Y";
  } catch {
    return false;
  }
})();

/** Compiles a profile without loading it (-Q) or touching the cache (-K). */
function compile(file: string): { status: number | null; out: string } {
  const r = spawnSync(parser ?? "apparmor_parser", ["-Q", "-K", file], { encoding: "utf8" });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

void describe("apparmor profile", () => {
  const tmp = mkdtempSync(join(tmpdir(), "deltaci-aa-"));
  after(() => rmSync(tmp, { recursive: true, force: true }));

  void it("the shipped deltaci-sandbox profile compiles with apparmor_parser -Q -K", { skip: noParser }, () => {
    const r = compile(apparmorProfileFile());
    assert.equal(r.status, 0, r.out);
    // the compiled policy is not empty and defines exactly our profile
    const bin = execFileSync(parser ?? "apparmor_parser", ["-Q", "-K", "-S", apparmorProfileFile()], { stdio: ["ignore", "pipe", "ignore"] });
    assert.ok(bin.length > 1000, `compiled policy of ${bin.length} bytes`);
    assert.ok(bin.includes(Buffer.from(DEFAULT_APPARMOR_PROFILE)));
  });

  void it("the check has teeth: a broken copy of the profile is refused", { skip: noParser }, () => {
    const broken = join(tmp, "broken");
    writeFileSync(broken, readFileSync(apparmorProfileFile(), "utf8").replace("deny mount,", "deny mount"));
    const r = compile(broken);
    assert.notEqual(r.status, 0);
    assert.match(r.out, /syntax error|unexpected/i);
  });

  void it("the profile denies what a job must never do", () => {
    const text = readFileSync(apparmorProfileFile(), "utf8");
    for (const rule of [
      "deny mount,", "deny umount,", "deny pivot_root,", "deny capability sys_admin,", "deny capability sys_module,", "deny capability sys_ptrace,",
      "deny network raw,", "deny /proc/sys/** wklx,", "deny /proc/sysrq-trigger rwklx,", "deny /proc/kcore rwklx,", "deny /sys/** wklx,",
      "deny /sys/kernel/security/** rwklx,", "ptrace (trace,read,tracedby,readby) peer=deltaci-sandbox,", "signal (receive) peer=unconfined,",
    ]) assert.ok(text.includes(`\n  ${rule}\n`), `missing rule: ${rule}`);
    // only the bundle's capabilities are granted (no bare `capability,` that would allow all)
    assert.doesNotMatch(text, /^\s*capability,/m);
  });
});

void describe("apparmor in the factory (real crun)", { timeout: 240_000 }, () => {
  const infos: { fields: object; msg: string }[] = [];
  const warns: string[] = [];
  const logger: SandboxLogger = { info: (fields, msg) => infos.push({ fields, msg }), warn: (_f, msg) => warns.push(msg) };
  const env = ociTestEnv(logger);
  after(async () => {
    await env.cleanup();
  });

  void it(kernelEnabled ? "AppArmor enabled: every step runs under deltaci-sandbox" : "AppArmor not enabled: said once per factory, no profile in the bundle", async () => {
    if (!kernelEnabled) console.log("# this kernel has no AppArmor: checking the \"not enabled\" path");
    for (let i = 0; i < 2; i++) {
      const spec = env.spec();
      const sb = await env.factory.create(spec);
      try {
        const config = JSON.parse(readFileSync(join(spec.slot.workDir, jobDirName(spec.jobId), "bundle", "config.json"), "utf8")) as { process: { apparmorProfile?: string } };
        const label = await runStep(sb, "cat /proc/self/attr/apparmor/current 2>/dev/null || cat /proc/self/attr/current");
        if (kernelEnabled) {
          assert.equal(config.process.apparmorProfile, DEFAULT_APPARMOR_PROFILE);
          assert.equal(label.stdout.toString().trim(), `${DEFAULT_APPARMOR_PROFILE} (enforce)`);
          const mount = await runStep(sb, "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m");
          assert.notEqual(mount.result.exitCode, 0);
        } else {
          assert.equal(config.process.apparmorProfile, undefined);
          assert.notEqual(label.result.exitCode, 0, "no LSM label to read without AppArmor");
        }
      } finally {
        await sb.dispose();
      }
      assert.deepEqual(await env.leftovers(spec), []);
    }
    const said = infos.filter((l) => /AppArmor/.test(l.msg));
    assert.equal(said.length, 1, "said once per factory, not per job");
    if (kernelEnabled) assert.match(said[0]?.msg ?? "", /applied to every job container/);
    else {
      // the same decision the loader makes with no side effect where AppArmor is off
      const expected = await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, systemAppArmorHost());
      assert.deepEqual(said[0], { fields: { apparmor: "disabled", profile: DEFAULT_APPARMOR_PROFILE }, msg: expected.message });
      assert.match(expected.message, /^AppArmor is not enabled on this kernel/);
    }
    assert.deepEqual(warns.filter((w) => /AppArmor/.test(w)), []);
  });
});
