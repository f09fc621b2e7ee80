/**
 * Git sources: the runner clones the repository inside the sandbox through the job's network
 * policy. A test host in our own network namespace serves a bare repository over dumb HTTP.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { jobSpec, memoryLogger, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";
import { GIT_HTTP_PORT as PORT, startGitHttpHost, type GitHttpHost } from "./support/git-http-host.ts";

const quiet = { info: () => {}, warn: () => {} };

void describe("runner git source", { timeout: 300_000 }, () => {
  let h: Harness;
  let host: GitHttpHost;
  let first = "";
  let second = "";
  let other = "";
  const oci = new CrunSandboxFactory({
    clock: systemClock, logger: quiet,
    resolveHost: async (name) => {
      if (name !== "git.deltaci.test") throw new Error(`unknown test name ${name}`);
      return [host.address];
    },
  });

  before(async () => {
    h = await startHarness();
    await oci.prepare();
    host = await startGitHttpHost();
    ({ first, second, other } = host);
  });
  after(async () => {
    host?.close();
    await h?.close();
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

  void it("oci: ref HEAD clones the remote's default branch, with or without a commit on it", async () => {
    const allow = { egress: "allowlist" as const, allow: [`git.deltaci.test:${PORT}`] };
    const show = [{ name: "show", run: "cat hello.txt; echo \"branch: $(git symbolic-ref --short -q HEAD || echo detached)\"; git rev-parse HEAD" }];
    const a = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "HEAD" }, steps: show });
    assert.equal(a.job.state, "succeeded", a.log);
    assert.match(a.log, /^second$/m);
    assert.match(a.log, /^branch: main$/m, "the default branch, checked out as a branch");
    assert.ok(a.log.includes(second), a.log);
    assert.match(a.log, /cloning http:\/\/git\.deltaci\.test:8090\/repo\.git ref HEAD \(the default branch\)/);
    const b = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "HEAD", commit: first }, steps: show });
    assert.equal(b.job.state, "succeeded", b.log);
    assert.match(b.log, /^first$/m);
    assert.match(b.log, /^branch: detached$/m);
    assert.ok(b.log.includes(first), b.log);
  });

  void it("oci: a commit on the ref (older than its tip) is checked out; one not on the ref fails with source_error", async () => {
    const allow = { egress: "allowlist" as const, allow: [`git.deltaci.test:${PORT}`] };
    const show = [{ name: "show", run: "cat hello.txt; git rev-parse HEAD" }];
    // `first` is on `other` too (its fork point): reachable from other's tip.
    const onOther = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "other", commit: first }, steps: show });
    assert.equal(onOther.job.state, "succeeded", onOther.log);
    assert.match(onOther.log, /^first$/m);
    assert.ok(onOther.log.includes(`checked out ${first}`), onOther.log);

    const off = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "main", commit: other }, steps: [{ name: "never", run: "echo RAN-USER-STEP" }] });
    assert.equal(off.job.state, "errored", off.log);
    assert.equal(off.job.failure?.reason, "source_error");
    const message = off.job.failure?.message ?? "";
    assert.ok(message.includes(`commit ${other} is not on ref main`), message);
    assert.ok(message.includes("git.deltaci.test:8090/repo.git") && !message.includes("s3cret"), message);
    assert.ok(off.log.includes(`(its tip is ${second})`), off.log);
    assert.ok(!off.log.includes("RAN-USER-STEP"), off.log);
    assert.ok(!off.log.includes("checked out"), off.log);

    const offHead = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "HEAD", commit: other }, steps: [{ name: "never", run: "echo RAN-USER-STEP" }] });
    assert.equal(offHead.job.failure?.reason, "source_error", offHead.log);
    assert.ok((offHead.job.failure?.message ?? "").includes(`commit ${other} is not on ref HEAD (the default branch)`), offHead.job.failure?.message);
    assert.ok(!offHead.log.includes("RAN-USER-STEP"), offHead.log);

    const missing = "0123456789abcdef0123456789abcdef01234567";
    const none = await run(oci, { network: allow, source: { kind: "git", url: url(), ref: "main", commit: missing }, steps: [{ name: "never", run: "echo RAN-USER-STEP" }] });
    assert.equal(none.job.failure?.reason, "source_error", none.log);
    assert.ok((none.job.failure?.message ?? "").includes(`no commit ${missing}`), none.job.failure?.message);
    assert.ok(!none.log.includes("RAN-USER-STEP"), none.log);
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
