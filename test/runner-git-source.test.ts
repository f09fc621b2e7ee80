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
    ({ first, second } = host);
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
