/** The CLI's own parts without a server: config precedence, secrets, source packing, log printing. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { appendFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadClientConfig } from "../src/config/client-config.ts";
import { parseSecretFlags, secretsForJob } from "../src/cli/secrets.ts";
import { listSourceFiles, packSource } from "../src/cli/source-pack.ts";
import { LogPrinter } from "../src/cli/log-printer.ts";
import { makeStyle } from "../src/cli/style.ts";
import { CliExit } from "../src/cli/exit.ts";
import { formatMarker, type MarkerKind } from "../src/logs/step-markers.ts";
import { JobFileParser } from "../src/jobfile/parse.ts";
import { StatusLine } from "../src/cli/run/status-line.ts";
import { checkIsolation } from "../src/cli/run/isolation.ts";
import { systemClock } from "../src/base/clock.ts";
import { isDeltaError } from "../src/base/errors.ts";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-cli-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

void test("client config: flags, then environment, then config file, then ./.deltaci/api-token", (t) => {
  const cwd = tempDir(t);
  const home = join(cwd, "xdg");
  mkdirSync(join(cwd, ".deltaci"), { recursive: true });
  writeFileSync(join(cwd, ".deltaci", "api-token"), "tok-from-up\n");
  assert.deepEqual(loadClientConfig({}, cwd, { XDG_CONFIG_HOME: home }), {
    server: "http://127.0.0.1:8181", token: "tok-from-up", sources: { server: "default", token: join(cwd, ".deltaci", "api-token") },
  });
  mkdirSync(join(home, "deltaci"), { recursive: true });
  writeFileSync(join(home, "deltaci", "config.yaml"), "server: http://file:1\napi-token-file: tokfile\n");
  writeFileSync(join(cwd, "tokfile"), "tok-from-file");
  let c = loadClientConfig({}, cwd, { XDG_CONFIG_HOME: home });
  assert.equal(c.server, "http://file:1");
  assert.equal(c.token, "tok-from-file");
  c = loadClientConfig({}, cwd, { XDG_CONFIG_HOME: home, DELTACI_SERVER: "env:2", DELTACI_API_TOKEN: "tok-env" });
  assert.equal(c.server, "http://env:2");
  assert.equal(c.token, "tok-env");
  writeFileSync(join(cwd, "flagtok"), "tok-flag");
  c = loadClientConfig({ server: "http://flag:3", tokenFile: "flagtok" }, cwd, { XDG_CONFIG_HOME: home, DELTACI_SERVER: "env:2", DELTACI_API_TOKEN: "tok-env" });
  assert.deepEqual([c.server, c.token, c.sources.server, c.sources.token], ["http://flag:3", "tok-flag", "--server", "--token-file"]);
  // The project's own config file wins over the user's.
  writeFileSync(join(cwd, ".deltaci", "config.yaml"), "server: http://project:4\n");
  assert.equal(loadClientConfig({}, cwd, { XDG_CONFIG_HOME: home }).server, "http://project:4");
  writeFileSync(join(cwd, ".deltaci", "config.yaml"), "sever: x\n");
  assert.throws(() => loadClientConfig({}, cwd, {}), /unknown key "sever"/);
});

void test("secrets: NAME=VALUE or from the environment; a job gets only what it declares; fork jobs get none", () => {
  const m = parseSecretFlags(["A=1", "B"], { B: "from-env" });
  assert.deepEqual([...m], [["A", "1"], ["B", "from-env"]]);
  assert.throws(() => parseSecretFlags(["MISSING"], {}), (e: unknown) => e instanceof CliExit && e.exitCode === 2 && /MISSING is not set/.test(e.message));
  assert.throws(() => parseSecretFlags(["bad-name=x"], {}), (e: unknown) => e instanceof CliExit && e.exitCode === 2);
  const [job] = new JobFileParser().parseOrThrow("jobs:\n  a:\n    secrets: [A]\n    steps: [{run: x}]\n", "f.yml");
  assert.ok(job);
  assert.deepEqual(secretsForJob(job, m, false), { A: "1" });
  assert.deepEqual(secretsForJob(job, m, true), {});
  assert.throws(() => secretsForJob(job, new Map(), false), (e: unknown) => e instanceof CliExit && e.exitCode === 2 && /needs secret A/.test(e.message));
  // Values never appear in errors.
  assert.throws(() => parseSecretFlags(["ok=sekrit", "1bad=sekrit"], {}), (e: unknown) => e instanceof Error && !e.message.includes("sekrit"));
});

void test("source packing: in a git repo, tracked and untracked-not-ignored files; never .deltaci/ or .git/", async (t) => {
  const dir = tempDir(t);
  const git = (...args: string[]) => execFileSync("git", ["-c", "user.email=t@t", "-c", "user.name=t", ...args], { cwd: dir, stdio: "pipe" });
  git("init", "-q");
  writeFileSync(join(dir, ".gitignore"), "ignored.txt\nnode_modules/\n");
  writeFileSync(join(dir, "tracked.txt"), "t");
  writeFileSync(join(dir, "deleted.txt"), "d");
  git("add", ".");
  git("commit", "-q", "-m", "x");
  rmSync(join(dir, "deleted.txt"));
  writeFileSync(join(dir, "new.txt"), "n");
  writeFileSync(join(dir, "ignored.txt"), "i");
  mkdirSync(join(dir, "node_modules"));
  writeFileSync(join(dir, "node_modules", "m.js"), "m");
  mkdirSync(join(dir, ".deltaci", "artifacts"), { recursive: true });
  writeFileSync(join(dir, ".deltaci", "api-token"), "secret");
  symlinkSync("tracked.txt", join(dir, "link.txt"));
  const list = await listSourceFiles(dir);
  assert.equal(list.mode, "git");
  assert.deepEqual(list.files, [".gitignore", "link.txt", "new.txt", "tracked.txt"]);
  const packed = await packSource(dir);
  const names = execFileSync("tar", ["-t"], { input: packed.tar }).toString().trim().split("\n").sort();
  assert.deepEqual(names, [".gitignore", "link.txt", "new.txt", "tracked.txt"]);
});

void test("source packing: a subdirectory of a work tree packs in git mode (the repository is found above it)", async (t) => {
  const dir = tempDir(t);
  const git = (...args: string[]) => execFileSync("git", ["-c", "user.email=t@t", "-c", "user.name=t", ...args], { cwd: dir, stdio: "pipe" });
  git("init", "-q");
  mkdirSync(join(dir, "app"));
  writeFileSync(join(dir, "app", ".gitignore"), "out/\n");
  writeFileSync(join(dir, "app", "a.txt"), "a");
  mkdirSync(join(dir, "app", "out"));
  writeFileSync(join(dir, "app", "out", "x"), "x");
  git("add", "app/a.txt");
  git("commit", "-q", "-m", "x");
  const list = await listSourceFiles(join(dir, "app"));
  assert.equal(list.mode, "git");
  assert.deepEqual(list.files, [".gitignore", "a.txt"]);
});

void test("deltaci run's isolation check: crun missing from PATH is named before anything is prepared", async (t) => {
  const path = process.env.PATH;
  t.after(() => {
    process.env.PATH = path;
  });
  process.env.PATH = tempDir(t);
  const problem = await checkIsolation();
  assert.match(problem ?? "", /^crun is not installed or does not run \(crun not found in PATH\); install it with: apt-get install crun$/);
});

void test("source packing: a plain directory honours its .gitignore files", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, ".gitignore"), "*.log\n");
  writeFileSync(join(dir, "a.txt"), "a");
  writeFileSync(join(dir, "b.log"), "b");
  mkdirSync(join(dir, "sub"));
  writeFileSync(join(dir, "sub", ".gitignore"), "secret.txt\n");
  writeFileSync(join(dir, "sub", "secret.txt"), "s");
  writeFileSync(join(dir, "sub", "c.txt"), "c");
  mkdirSync(join(dir, ".deltaci"));
  writeFileSync(join(dir, ".deltaci", "x"), "x");
  const list = await listSourceFiles(dir);
  assert.equal(list.mode, "gitignore");
  assert.deepEqual(list.files, [".gitignore", "a.txt", "sub/.gitignore", "sub/c.txt"]);
});

void test("source packing: names with spaces and newlines; the throwaway git dir is removed; no git in PATH is a usage error naming git", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "a b.txt"), "a");
  writeFileSync(join(dir, "line\nbreak.txt"), "n");
  const [path, tmp] = [process.env.PATH, process.env.TMPDIR];
  t.after(() => {
    process.env.PATH = path;
    if (tmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = tmp;
  });
  process.env.TMPDIR = tempDir(t);
  const packed = await packSource(dir);
  assert.deepEqual(readdirSync(process.env.TMPDIR), []);
  assert.equal(packed.files, 2);
  assert.equal(packed.mode, "gitignore");
  const out = tempDir(t);
  execFileSync("tar", ["-x", "-C", out], { input: packed.tar });
  assert.deepEqual(readdirSync(out).sort(), ["a b.txt", "line\nbreak.txt"]);
  process.env.PATH = tempDir(t);
  await assert.rejects(packSource(dir), (e: unknown) => isDeltaError(e) && e.code === "E_INVALID" && /install git/.test(e.message));
});

void test("source packing: a file written to while it is packed (a log, a database) is a warning naming it, not a failed pack", async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, "kept.txt"), "k");
  const grow = join(dir, "grow.log");
  writeFileSync(grow, "");
  truncateSync(grow, 32 << 20); // sparse: tar takes a while to read it, and the disk holds nothing
  // Appended to from this thread while the child packs: tar sees the size change during its read.
  const writer = setInterval(() => appendFileSync(grow, "x\n"), 1);
  t.after(() => clearInterval(writer));
  let warned: string[] = [];
  for (let i = 0; i < 5 && warned.length === 0; i++) {
    const packed = await packSource(dir); // threw E_INVALID ("tar failed") before: tar exits 1 then
    assert.equal(packed.files, 2);
    const out = tempDir(t);
    execFileSync("tar", ["-x", "-C", out], { input: packed.tar });
    assert.deepEqual(readdirSync(out).sort(), ["grow.log", "kept.txt"]);
    warned = packed.warnings;
  }
  clearInterval(writer);
  assert.deepEqual(warned, ["grow.log: file changed as we read it"]);
});

void test("log printer: whole lines, step markers as headers with results, prefixes, controls neutralised on a TTY", () => {
  let out = "";
  const p = new LogPrinter({ write: (s) => (out += s), style: makeStyle(false), prefix: "job | " });
  const nonce = "0123456789abcdef";
  const marker = (kind: MarkerKind, o: Record<string, unknown>) => formatMarker(nonce, kind, o);
  p.push(Buffer.from(marker("log-start", { version: 1 }) + marker("step-start", { index: 0, name: "build" }) + "hel"));
  p.push(Buffer.from("lo\nwor"));
  // A look-alike marker with another nonce is output, not a step boundary.
  p.push(Buffer.from(`ld\n${formatMarker("ffffffffffffffff", "step-end", { index: 0, exitCode: 0 })}`));
  p.push(Buffer.from(`${marker("step-end", { index: 0, exitCode: 2, durationMs: 1500, result: "failed" })}${marker("step-skipped", { index: 1, name: "deploy", reason: "previous step failed" })}tail`));
  p.end();
  assert.equal(out, [
    "job | ▶ build", "job | hello", "job | world", `job | ##[deltaci ffffffffffffffff] step-end {"index":0,"exitCode":0}`,
    "job | ✗ exit 2 build (1.50s)", "job | – deploy (skipped: previous step failed)", "job | tail", "",
  ].join("\n"));
  assert.deepEqual(p.steps, [{ index: 0, name: "build", exitCode: 2, durationMs: 1500 }, { index: 1, name: "deploy", exitCode: null, durationMs: null }]);
  let tty = "";
  const q = new LogPrinter({ write: (s) => (tty += s), style: makeStyle(true), prefix: "" });
  q.push(Buffer.from("\x1b[31mred\x1b[39m \x1b]0;title\x07 \x1b[2J\n"));
  assert.equal(tty, "\x1b[31mred\x1b[39m ^[]0;title? ^[[2J\n");
  // A multi-byte character split across chunks stays whole.
  let u = "";
  const r = new LogPrinter({ write: (s) => (u += s), style: makeStyle(false), prefix: "" });
  const bytes = Buffer.from("é\n");
  r.push(bytes.subarray(0, 1));
  r.push(bytes.subarray(1));
  assert.equal(u, "é\n");
});

void test("status line, piped: a wait is printed once per change, counters do not churn, output lines pass through", () => {
  let out = "";
  const line = new StatusLine({ write: (t) => (out += t), tty: false, clock: systemClock });
  line.set("waiting for a runner (0s)", "waiting for a runner");
  line.set("waiting for a runner (1s)", "waiting for a runner");
  line.print("a log line\n");
  line.set("preparing the sandbox (2s)", "preparing the sandbox");
  line.set("");
  line.stop();
  assert.equal(out, "… waiting for a runner (0s)\na log line\n… preparing the sandbox (2s)\n");
  let tty = "";
  const t = new StatusLine({ write: (s) => (tty += s), tty: true, clock: systemClock });
  t.set("waiting");
  t.print("line\n");
  t.stop();
  assert.ok(tty.includes("waiting") && tty.includes("\r\x1b[2Kline\n") && tty.endsWith("\r\x1b[2K"), JSON.stringify(tty));
});
