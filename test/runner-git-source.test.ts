/**
 * Git sources: the runner clones the repository inside the sandbox through the job's network
 * policy. A test host in our own network namespace serves a bare repository over dumb HTTP.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { jobSpec, memoryLogger, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";
import { createNetHost, type NetHost } from "./support/sandbox-nethost.ts";

const quiet = { info: () => {}, warn: () => {} };
const PORT = 8090;

void describe("runner git source", { timeout: 300_000 }, () => {
  let h: Harness;
  let host: NetHost;
  let git: ChildProcess | null = null;
  const dir = mkdtempSync(join(tmpdir(), "deltaci-git-"));
  let first = "";
  let second = "";
  const oci = new CrunSandboxFactory({
    clock: systemClock, logger: quiet,
    resolveHost: async (name) => {
      if (name !== "git.deltaci.test") throw new Error(`unknown test name ${name}`);
      return [host.address];
    },
  });

  before(async () => {
    const g = (cwd: string, ...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], { cwd, stdio: "pipe" }).toString().trim();
    const work = join(dir, "work");
    execFileSync("mkdir", ["-p", work]);
    g(work, "init", "-q");
    writeFileSync(join(work, "hello.txt"), "first\n");
    g(work, "add", "hello.txt");
    g(work, "commit", "-q", "-m", "one");
    first = g(work, "rev-parse", "HEAD");
    writeFileSync(join(work, "hello.txt"), "second\n");
    g(work, "commit", "-q", "-am", "two");
    second = g(work, "rev-parse", "HEAD");
    g(dir, "clone", "-q", "--bare", work, join(dir, "repo.git"));
    g(join(dir, "repo.git"), "update-server-info");
    h = await startHarness();
    await oci.prepare();
    host = await createNetHost();
    const srv = spawn("ip", ["netns", "exec", host.ns, "python3", "-m", "http.server", String(PORT), "--bind", host.address, "--directory", dir], { stdio: ["ignore", "pipe", "pipe"] });
    git = srv;
    await new Promise<void>((resolve, reject) => {
      const onData = (c: Buffer) => {
        if (c.toString().includes("Serving")) resolve();
      };
      srv.stdout?.on("data", onData);
      srv.stderr?.on("data", onData);
      srv.once("exit", (code) => reject(new Error(`git http server exited ${code}`)));
    });
  });
  after(async () => {
    if (git?.pid && git.exitCode === null) git.kill("SIGKILL");
    host?.remove();
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function run(factory: SandboxFactory, spec: Parameters<typeof jobSpec>[0]) {
    const jobId = await h.api.submit(jobSpec(spec));
    const logger = memoryLogger();
    try {
      await runInProcess(h, factory, { logger });
      const job = await h.api.waitDone(jobId, 60_000);
      const log = (await h.api.log(jobId)).toString();
      return { job, log };
    } catch (err) {
      await h.api.cancel(jobId, "hard").catch(() => {});
      throw new Error(`${(err as Error).message}\nrunner log:\n${logger.lines.join("\n")}`, { cause: err });
    }
  }

  const url = () => `http://user:s3cret@git.deltaci.test:${PORT}/repo.git`;

  void it("oci: clones the ref, or the given commit, through the allowlist", async () => {
    const allow = { egress: "allowlist" as const, allow: [`git.deltaci.test:${PORT}`] };
    const a = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "main" }, steps: [{ name: "show", run: "cat hello.txt; git rev-parse HEAD" }] });
    assert.equal(a.job.state, "succeeded", a.log);
    assert.match(a.log, /^second$/m);
    assert.ok(a.log.includes(second), a.log);
    assert.ok(!a.log.includes("s3cret"), "credentials never in the log");
    const b = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "main", commit: first }, steps: [{ name: "show", run: "cat hello.txt; git rev-parse HEAD" }] });
    assert.equal(b.job.state, "succeeded", b.log);
    assert.match(b.log, /^first$/m);
    assert.ok(b.log.includes(first), b.log);
  });

  void it("oci: a git host not on the allowlist fails the job with source_error", async () => {
    const c = await run(oci, {
      network: { egress: "allowlist", allow: ["other.deltaci.test:443"] },
      source: { kind: "git", url: url(), ref: "main" }, steps: [{ name: "never", run: "echo RAN-USER-STEP" }],
    });
    assert.equal(c.job.state, "errored", c.log);
    assert.equal(c.job.failure?.reason, "source_error");
    assert.match(c.job.failure?.message ?? "", /git\.deltaci\.test:8090\/repo\.git/);
    assert.ok(!(c.job.failure?.message ?? "").includes("s3cret"));
    assert.ok(!c.log.includes("RAN-USER-STEP"), c.log);
    assert.ok(!c.log.includes("s3cret"), c.log);
  });

  void it("process backend: clones from a reachable host", async () => {
    const proc = new ProcessSandboxFactory({ clock: systemClock, logger: quiet });
    const d = await run(proc, {
      network: { egress: "allowlist", allow: [`${host.address}:${PORT}`] },
      source: { kind: "git", url: `http://${host.address}:${PORT}/repo.git`, ref: "main", commit: first }, steps: [{ name: "show", run: "cat hello.txt" }],
    });
    assert.equal(d.job.state, "succeeded", d.log);
    assert.match(d.log, /^first$/m);
  });
});
