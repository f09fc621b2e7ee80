import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { DirectCommands } from "./host-commands.ts";
import { buildDiskTool, buildSandboxHelper, buildSpawner, libcrunLink } from "./native-tools.ts";
import { ResidentSpawner } from "./resident-spawner.ts";

const cacheDir = mkdtempSync(join(tmpdir(), "spawner-test-"));
after(() => rmSync(cacheDir, { recursive: true, force: true }));
const warnings: string[] = [];
const logger = { info: () => {}, warn: (_f: Record<string, unknown>, msg: string) => void warnings.push(msg) };

void test("runs commands: exit codes, stdout, stderr, a missing binary, a timeout", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  try {
    assert.deepEqual(await s.run("sh", ["-c", "echo out; echo err >&2; exit 3"], 10_000), { code: 3, stdout: "out\n", stderr: "err\n" });
    const big = await s.run("head", ["-c", "300000", "/dev/zero"], 10_000);
    assert.equal(big.stdout.length, 300_000);
    const missing = await s.run("/nonexistent/tool", [], 10_000);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /No such file/);
    assert.equal((await s.run("sleep", ["30"], 200)).code, 128 + 15);
  } finally {
    await s.close();
  }
  assert.deepEqual(warnings, []);
});

void test("a channel command gets a stream as fd 3 that outlives it; a failed one's channel is destroyed", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  try {
    let replied!: (text: string) => void;
    const reply = new Promise<string>((resolve) => (replied = resolve));
    const ok = await s.runWithChannel("sh", ["-c", "(read line <&3; echo \"got $line\" >&3) & echo detached >&2"], 10_000, (d) => replied(d.toString()));
    assert.equal(ok.code, 0);
    assert.equal(ok.stderr, "detached\n");
    ok.channel.write("ping\n");
    assert.equal(await reply, "got ping\n");
    ok.channel.destroy();
    const bad = await s.runWithChannel("sh", ["-c", "echo nope >&2; exit 4"], 10_000, () => {});
    assert.equal(bad.code, 4);
    assert.equal(bad.stderr, "nope\n");
    assert.equal(bad.channel.destroyed, true);
  } finally {
    await s.close();
  }
});

void test("close ends the spawner and removes its socket dir; the next command starts a new one", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  // a command's parent is the spawner itself (one fork per command)
  const spawnerPid = async () => Number((await s.run("sh", ["-c", "echo $PPID"], 10_000)).stdout.trim());
  const pid = await spawnerPid();
  const dir = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[1] ?? "";
  assert.match(dir, /deltaci-spawner-/);
  assert.equal(existsSync(join(dir, "s")), true);
  await s.close();
  assert.equal(existsSync(dir), false);
  assert.equal(existsSync(`/proc/${pid}`), false);
  const next = await spawnerPid();
  assert.notEqual(next, pid);
  await s.close();
  assert.equal(existsSync(`/proc/${next}`), false);
});

void test("what a command leaves behind is reparented to the spawner, which reaps it", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  const parentOf = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ")[1]);
  try {
    const spawner = Number((await s.run("sh", ["-c", "echo $PPID"], 10_000)).stdout.trim());
    // the orphan keeps no pipe of the command open, so the command's reply does not wait for it
    const orphan = Number((await s.run("sh", ["-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"], 10_000)).stdout.trim());
    assert.equal(parentOf(orphan), spawner, "the spawner is the subreaper of its commands' orphans");
    process.kill(orphan, "SIGKILL");
    // reaped by the spawner: no zombie is left (it would keep its /proc entry)
    for (let i = 0; i < 1000 && existsSync(`/proc/${orphan}`); i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(existsSync(`/proc/${orphan}`), false);
  } finally {
    await s.close();
  }
});

void test("a command run with a hidden mount runs in a private mount namespace without it; the host's table is unchanged", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  const dir = mkdtempSync(join(tmpdir(), "spawner-hide-"));
  const mounted = spawnSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir]).status === 0;
  try {
    assert.ok(mounted, "tmpfs mounted for the test");
    const seen = (out: string) => out.split("\n").some((l) => l.split(" ")[4] === dir);
    const hidden = await s.run("cat", ["/proc/self/mountinfo"], 10_000, { dir, wrapper: ["/nonexistent/wrapper"] });
    assert.equal(hidden.code, 0, hidden.stderr);
    assert.equal(seen(hidden.stdout), false, "the mount is gone in the command's namespace (no wrapper exec: its path does not exist)");
    assert.ok(hidden.stdout.includes(" /usr/bin/cat ") || hidden.stdout.includes(" /bin/cat "), "its binary is bind-mounted read-only over itself");
    assert.equal(seen(readFileSync("/proc/self/mountinfo", "utf8")), true, "the host still has it");
    const plain = await s.run("cat", ["/proc/self/mountinfo"], 10_000);
    assert.equal(seen(plain.stdout), true);
    // without a spawner the helper's unshare-cgroup2 does the same as a separate exec
    const helper = (await buildSandboxHelper(cacheDir)).path;
    const direct = await new DirectCommands().run("cat", ["/proc/self/mountinfo"], 10_000, { dir, wrapper: [helper, "unshare-cgroup2", dir] });
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(seen(direct.stdout), false);
    assert.ok(direct.stdout.includes(" /usr/bin/cat ") || direct.stdout.includes(" /bin/cat "));
  } finally {
    if (mounted) spawnSync("umount", [dir]);
    rmSync(dir, { recursive: true, force: true });
    await s.close();
  }
});

void test("a connection is kept for the next request; concurrent requests and channel commands still get their own replies", async () => {
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  /** The spawner's socket inodes (its listening socket and the connections it holds). */
  const sockets = (pid: number) => readdirSync(`/proc/${pid}/fd`).map((fd) => { try { return readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ""; } }).filter((l) => l.startsWith("socket:")).sort();
  try {
    const pid = Number((await s.run("sh", ["-c", "echo $PPID"], 10_000)).stdout.trim());
    // while a command runs the spawner holds its request's connection; after the reply it still does
    const running = s.run("sleep", ["0.3"], 10_000);
    await new Promise((r) => setTimeout(r, 150));
    const during = sockets(pid);
    assert.equal((await running).code, 0);
    assert.deepEqual(sockets(pid), during, "the connection is kept after the reply");
    const leaks: Error[] = [];
    const onWarning = (w: Error) => void (w.name === "MaxListenersExceededWarning" && leaks.push(w));
    process.on("warning", onWarning);
    for (let i = 0; i < 15; i++) assert.equal((await s.run("true", [], 10_000)).code, 0);
    await new Promise((r) => setImmediate(r));
    process.off("warning", onWarning);
    assert.deepEqual(sockets(pid), during, "and served the next requests: no new connection");
    assert.deepEqual(leaks.map((w) => w.message), [], "a kept connection gains no listener per request");
    const many = await Promise.all(Array.from({ length: 12 }, (_, i) => s.run("sh", ["-c", `sleep 0.0${i % 3}; echo ${i}`], 10_000)));
    assert.deepEqual(many.map((r) => r.stdout), Array.from({ length: 12 }, (_, i) => `${i}\n`));
    const got: Array<(line: string) => void> = [];
    const linesRead = Promise.all(Array.from({ length: 4 }, (_, i) => new Promise<string>((resolve) => (got[i] = resolve))));
    const withChannels = await Promise.all(got.map((resolve, i) => s.runWithChannel("sh", ["-c", `echo ch${i} >&3`], 10_000, (d) => resolve(d.toString()))));
    const lines = await linesRead;
    assert.deepEqual(lines, ["ch0\n", "ch1\n", "ch2\n", "ch3\n"]);
    for (const r of withChannels) r.channel.destroy();
  } finally {
    await s.close();
  }
});

void test("a starting spawner removes the dirs of spawners whose host died with them (kill -9 of both), and only those", async () => {
  const dead = spawnSync("true").pid; // exited and reaped: its pid names no process
  const live = spawn("sleep", ["30"], { stdio: "ignore" });
  const mk = (name: string) => {
    const d = join(tmpdir(), name);
    mkdirSync(d, { mode: 0o700 });
    writeFileSync(join(d, "s"), "");
    return d;
  };
  const deadDir = mk(`deltaci-spawner-${dead}-t${process.pid}`);
  const liveDir = mk(`deltaci-spawner-${live.pid}-t${process.pid}`);
  const oldName = mk(`deltaci-spawner-t${process.pid}x`); // no pid in the name: not ours to judge
  // A dead pid's name holding more than the socket (anyone may make such a name in /tmp): kept, nothing in it touched.
  const planted = mk(`deltaci-spawner-${dead}-p${process.pid}`);
  writeFileSync(join(planted, "other"), "x");
  const s = new ResidentSpawner((await buildSpawner(cacheDir)).path, logger);
  try {
    assert.equal((await s.run("true", [], 10_000)).code, 0);
    assert.equal(existsSync(deadDir), false, "the dead host's dir is removed");
    assert.equal(existsSync(liveDir), true, "a live pid's dir is kept");
    assert.equal(existsSync(oldName), true);
    assert.equal(existsSync(join(planted, "other")), true, "a dir holding anything but the socket is left alone");
  } finally {
    await s.close();
    live.kill("SIGKILL");
    for (const d of [deadDir, liveDir, oldName, planted]) rmSync(d, { recursive: true, force: true });
  }
});

void test("a built-in tool (the disk tool) runs in the spawner's child without an exec, with the binary's output and exit codes", async () => {
  const [spawner, diskTool] = await Promise.all([buildSpawner(cacheDir), buildDiskTool(cacheDir)]);
  const s = new ResidentSpawner(spawner.path, logger, new Map([[diskTool.path, "disk-tool"]]));
  const file = join(cacheDir, "sparse");
  writeFileSync(file, "");
  spawnSync("sh", ["-c", `printf x | dd of=${file} bs=1 seek=1048576 conv=notrunc 2>/dev/null`]);
  try {
    const direct = new DirectCommands();
    for (const args of [["extents", file], ["umount", join(cacheDir, "not-mounted")], ["no-such-command"]]) {
      const viaSpawner = await s.run(diskTool.path, args, 10_000);
      const viaExec = await direct.run(diskTool.path, args, 10_000);
      assert.deepEqual({ ...viaSpawner, stderr: viaSpawner.stderr.replace(/^usage: \S+/, "usage:") }, { ...viaExec, stderr: viaExec.stderr.replace(/^usage: \S+/, "usage:") });
    }
    assert.match((await s.run(diskTool.path, ["extents", file], 10_000)).stdout, /^1048576 1\n$/);
    assert.equal((await s.run(diskTool.path, ["no-such-command"], 10_000)).code, 2);
    // the same request for another binary execs it
    assert.deepEqual(await s.run("sh", ["-c", "echo execd"], 10_000), { code: 0, stdout: "execd\n", stderr: "" });
  } finally {
    await s.close();
  }
  // no disk-tool process ran: the spawner's child did its work (its comm stays "spawner")
  const traced = spawnSync("strace", ["-f", "-qq", "-e", "trace=execve", "-o", join(cacheDir, "trace"), "node", "--import", "tsx", "-e",
    `import { ResidentSpawner } from ${JSON.stringify(join(import.meta.dirname, "resident-spawner.ts"))};
     const s = new ResidentSpawner(${JSON.stringify(spawner.path)}, { info() {}, warn() {} }, new Map([[${JSON.stringify(diskTool.path)}, "disk-tool"]]));
     const r = await s.run(${JSON.stringify(diskTool.path)}, ["extents", ${JSON.stringify(file)}], 10000);
     await s.close();
     if (r.code !== 0) process.exit(1);`], { encoding: "utf8" });
  assert.equal(traced.status, 0, traced.stderr);
  const execs = readFileSync(join(cacheDir, "trace"), "utf8").split("\n").filter((l) => l.includes("execve(") && !l.includes("ENOENT"));
  assert.equal(execs.filter((l) => l.includes("disk-tool")).length, 0, execs.join("\n"));
  assert.equal(execs.filter((l) => l.includes(spawner.path)).length, 1);
});

void test("crun built in (libcrun): its two command lines give the binary's results, any other is exec'd", async (t) => {
  const link = await libcrunLink("crun");
  if (!("flags" in link)) {
    t.skip(`libcrun cannot be linked: ${link.reason}`);
    return;
  }
  const spawner = await buildSpawner(cacheDir, "crun");
  assert.equal(spawner.builtinCrun, true, spawner.noBuiltinCrun);
  // decided once: the next build finds the binary (a refusal would be kept beside it too)
  assert.deepEqual(await buildSpawner(cacheDir, "crun"), spawner);
  const root = join(cacheDir, "crun-root");
  mkdirSync(root, { mode: 0o700 });
  const lines = [
    [true, ["--root", root, "delete", "-f", "no-such-container"]],
    [false, ["--root", root, "delete", "no-such-container"]], // no -f
    [true, ["--root", root, "run", "-d", "--preserve-fds=0", "--no-new-keyring", "--bundle", join(cacheDir, "no-bundle"), "x"]], // no bundle
    [false, ["--version"]],
  ] as const;
  const s = new ResidentSpawner(spawner.path, logger, new Map([["crun", "crun"]]));
  try {
    const direct = new DirectCommands();
    for (const [, args] of lines) assert.deepEqual(await s.run("crun", [...args], 10_000), await direct.run("crun", [...args], 10_000), args.join(" "));
  } finally {
    await s.close();
  }
  // which ones ran a crun: the same commands under strace, an `echo mark-N` before each
  const trace = join(cacheDir, "crun-trace");
  const traced = spawnSync("strace", ["-f", "-qq", "-e", "trace=execve", "-o", trace, "node", "--import", "tsx", "-e",
    `import { ResidentSpawner } from ${JSON.stringify(join(import.meta.dirname, "resident-spawner.ts"))};
     const s = new ResidentSpawner(${JSON.stringify(spawner.path)}, { info() {}, warn() {} }, new Map([["crun", "crun"]]));
     for (const [i, args] of ${JSON.stringify(lines.map(([, a]) => a))}.entries()) {
       await s.run("echo", ["mark-" + i], 10000);
       await s.run("crun", args, 10000);
     }
     await s.close();`], { encoding: "utf8" });
  assert.equal(traced.status, 0, traced.stderr);
  const execs = readFileSync(trace, "utf8").split("\n").filter((l) => l.includes("execve(") && !l.includes("ENOENT"));
  for (const [i, [taken, args]] of lines.entries()) {
    const from = execs.findIndex((l) => l.includes(`"mark-${i}"`));
    const to = i + 1 < lines.length ? execs.findIndex((l) => l.includes(`"mark-${i + 1}"`)) : execs.length;
    assert.ok(from >= 0 && to > from, `marks in the trace:\n${execs.join("\n")}`);
    const cruns = execs.slice(from + 1, to).filter((l) => /execve\("[^"]*\/crun"/.test(l));
    assert.equal(cruns.length, taken ? 0 : 1, `taken by the built-in: ${args.join(" ")}\n${cruns.join("\n")}`);
  }
});

void test("crun built in (libcrun): the spawner's commands get the environment the host gave it, as without libcrun", async (t) => {
  const link = await libcrunLink("crun");
  if (!("flags" in link)) {
    t.skip(`libcrun cannot be linked: ${link.reason}`);
    return;
  }
  const envOf = async (spawner: string, builtins: Map<string, string>) => {
    const s = new ResidentSpawner(spawner, logger, builtins);
    try {
      return (await s.run("env", [], 10_000)).stdout.split("\n").filter((l) => !l.startsWith("_=")).sort();
    } finally {
      await s.close();
    }
  };
  const withLibcrun = await buildSpawner(cacheDir, "crun");
  assert.equal(withLibcrun.builtinCrun, true, withLibcrun.noBuiltinCrun);
  // libcrun's constructor re-executes the spawner and marks its environment (_LIBCONTAINER_CLONED_BINARY)
  assert.deepEqual(await envOf(withLibcrun.path, new Map([["crun", "crun"]])), await envOf((await buildSpawner(cacheDir)).path, new Map()));
});
