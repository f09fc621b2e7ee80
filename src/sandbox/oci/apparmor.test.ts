/** The AppArmor decisions, against temp files standing in for securityfs and a scripted apparmor_parser. */
import assert from "node:assert/strict";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { apparmorProfileFile, type AppArmorHost, DEFAULT_APPARMOR_PROFILE, detectAppArmor, resolveAppArmor, systemAppArmorHost } from "./apparmor.ts";

const root = mkdtempSync(join(tmpdir(), "deltaci-apparmor-"));
let n = 0;

interface Fixture {
  host: AppArmorHost;
  /** argv lines the scripted parser was called with. */
  calls: () => string[];
}

/**
 * A host in a temp dir. `parser`: absent, or a script that records its argv and then `lists` the
 * profile in the profiles file (like the kernel would) or `fails`, or succeeds without listing it.
 */
function fixture(o: { enabled?: string; loaded?: string[] | null; parser?: "lists" | "fails" | "silent" | "absent" }): Fixture {
  const dir = join(root, String(n++));
  mkdirSync(join(dir, "bin"), { recursive: true });
  const enabledPath = join(dir, "enabled");
  const profilesPath = join(dir, "profiles");
  const callsPath = join(dir, "calls");
  if (o.enabled !== undefined) writeFileSync(enabledPath, o.enabled);
  if (o.loaded !== null) writeFileSync(profilesPath, (o.loaded ?? ["other-profile (enforce)"]).join("\n") + "\n");
  const parser = o.parser ?? "absent";
  if (parser !== "absent") {
    const action = { lists: `echo '${DEFAULT_APPARMOR_PROFILE} (enforce)' >> '${profilesPath}'`, fails: "echo 'syntax error in line 3' >&2; exit 1", silent: "true" }[parser];
    writeFileSync(join(dir, "bin", "apparmor_parser"), `#!/bin/sh\necho "$*" >> '${callsPath}'\n${action}\n`);
    chmodSync(join(dir, "bin", "apparmor_parser"), 0o755);
  }
  return {
    host: { enabledPath, profilesPath, profileFile: "/shipped/deltaci-sandbox", parserDirs: [join(dir, "nothing-here"), join(dir, "bin")] },
    calls: () => (existsSync(callsPath) ? readFileSync(callsPath, "utf8").trim().split("\n") : []),
  };
}

void describe("apparmor decisions", () => {
  after(() => rmSync(root, { recursive: true, force: true }));

  void it("kernel without AppArmor (no parameters file, or N): no profile, said once as info", async () => {
    for (const enabled of [undefined, "N\n"]) {
      const f = fixture({ parser: "lists", ...(enabled === undefined ? {} : { enabled }) });
      const infos: string[] = [];
      const warns: string[] = [];
      const got = await detectAppArmor(DEFAULT_APPARMOR_PROFILE, { info: (_f, m) => infos.push(m), warn: (_f, m) => warns.push(m) }, f.host);
      assert.equal(got, null);
      assert.equal(infos.length, 1);
      assert.match(infos[0] ?? "", /AppArmor is not enabled on this kernel/);
      assert.deepEqual(warns, []);
      assert.deepEqual(f.calls(), [], "nothing is loaded where AppArmor is off");
    }
  });

  void it("profile already loaded: applied without running the parser", async () => {
    const f = fixture({ enabled: "Y\n", loaded: ["docker-default (enforce)", `${DEFAULT_APPARMOR_PROFILE} (enforce)`], parser: "lists" });
    assert.deepEqual(await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, f.host), {
      profile: DEFAULT_APPARMOR_PROFILE,
      state: "loaded",
      message: "AppArmor profile deltaci-sandbox is loaded: applied to every job container",
    });
    assert.deepEqual(f.calls(), []);
  });

  void it("profile not loaded: loads the shipped file with apparmor_parser -r -W, then applies it", async () => {
    const f = fixture({ enabled: "Y", parser: "lists" });
    const d = await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, f.host);
    assert.equal(d.state, "loaded-now");
    assert.equal(d.profile, DEFAULT_APPARMOR_PROFILE);
    assert.deepEqual(f.calls(), ["-r -W /shipped/deltaci-sandbox"]);
  });

  void it("securityfs list unreadable: a successful load is trusted", async () => {
    const f = fixture({ enabled: "Y", loaded: null, parser: "silent" });
    const d = await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, f.host);
    assert.equal(d.state, "loaded-now");
    assert.equal(d.profile, DEFAULT_APPARMOR_PROFILE);
  });

  void it("apparmor_parser missing: no profile, a warning naming the Debian package", async () => {
    const f = fixture({ enabled: "Y", parser: "absent" });
    const warns: string[] = [];
    const got = await detectAppArmor(DEFAULT_APPARMOR_PROFILE, { info: () => {}, warn: (_f, m) => warns.push(m) }, f.host);
    assert.equal(got, null);
    assert.equal(warns.length, 1);
    assert.match(warns[0] ?? "", /apparmor_parser is not installed \(Debian package `apparmor`\)/);
  });

  void it("apparmor_parser refuses the profile: no profile, its message in the warning", async () => {
    const f = fixture({ enabled: "Y", parser: "fails" });
    const d = await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, f.host);
    assert.equal(d.state, "load-failed");
    assert.equal(d.profile, null);
    assert.match(d.message, /exited 1: syntax error in line 3/);
  });

  void it("parser succeeds but the kernel does not list the profile: not applied", async () => {
    const f = fixture({ enabled: "Y", parser: "silent" });
    const d = await resolveAppArmor(DEFAULT_APPARMOR_PROFILE, f.host);
    assert.equal(d.state, "load-failed");
    assert.match(d.message, /is not listed in/);
  });

  void it("a custom profile name is never loaded from the shipped file", async () => {
    const f = fixture({ enabled: "Y", parser: "lists" });
    const d = await resolveAppArmor("site-profile", f.host);
    assert.equal(d.state, "profile-missing");
    assert.equal(d.profile, null);
    assert.deepEqual(f.calls(), []);
    const loaded = fixture({ enabled: "Y", loaded: ["site-profile (enforce)"] });
    assert.equal((await resolveAppArmor("site-profile", loaded.host)).profile, "site-profile");
  });

  void it("the system host points at the shipped profile, which declares deltaci-sandbox", () => {
    const host = systemAppArmorHost();
    assert.equal(host.profileFile, apparmorProfileFile());
    assert.match(readFileSync(host.profileFile, "utf8"), /^profile deltaci-sandbox flags=\(attach_disconnected,mediate_deleted\) \{$/m);
    assert.equal(host.enabledPath, "/sys/module/apparmor/parameters/enabled");
  });
});
