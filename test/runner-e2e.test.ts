/**
 * The runner end to end: the real server on loopback, the real runner (runRunner in process),
 * real sandboxes — the process backend always, crun when this machine can run it (skipped with
 * the reason otherwise). Steps, exit codes, env, markers, masking, artifacts, timeouts, source.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { newToken } from "../src/base/ids.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { jobSpec, memoryLogger, nonceOf, parseMarker, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const quiet = { info: () => {}, warn: () => {} };

interface Backend {
  name: string;
  make: () => Promise<SandboxFactory | string>;
}

const backends: Backend[] = [
  { name: "process", make: async () => new ProcessSandboxFactory({ clock: systemClock, logger: quiet }) },
  {
    name: "oci",
    make: async () => {
      const f = new CrunSandboxFactory({ clock: systemClock, logger: quiet });
      try {
        await f.prepare();
        return f;
      } catch (err) {
        return `crun backend unavailable here: ${(err as Error).message}`;
      }
    },
  },
];

function markers(log: Buffer) {
  const lines = log.toString().split("\n");
  const nonce = nonceOf(lines[0] ?? "");
  assert.ok(nonce, `first line is log-start: ${lines[0]}`);
  return lines.map((l) => parseMarker(l, nonce)).filter((m) => m !== null);
}

for (const backend of backends) {
  void describe(`runner end to end (${backend.name})`, () => {
    let h: Harness;
    let factory: SandboxFactory | null = null;
    let skip: string | false = false;

    before(async () => {
      h = await startHarness();
      const f = await backend.make();
      if (typeof f === "string") skip = f;
      else factory = f;
    });
    after(async () => h?.close());

    /** Submits, runs one runner, and returns the final job, its log and the runner's exit. */
    async function run(spec: Parameters<typeof jobSpec>[0], secrets?: Record<string, string>) {
      assert.ok(factory);
      const jobId = await h.api.submit(jobSpec(spec), secrets);
      const logger = memoryLogger();
      try {
        const exit = await runInProcess(h, factory, { logger });
        const job = await h.api.waitDone(jobId, 30_000);
        const log = await h.api.log(jobId);
        return { jobId, job, log, exit, logger };
      } catch (err) {
        // Leave nothing queued for the next test's runner.
        await h.api.cancel(jobId, "hard").catch(() => {});
        throw new Error(`${(err as Error).message}\nrunner log:\n${logger.lines.join("\n")}`, { cause: err });
      }
    }

    void it("runs steps in order with the job's env; the first failure skips the rest", async (t) => {
      if (skip) return t.skip(skip);
      const { job, log, exit } = await run({
        env: { JOB_VAR: "from-job", SHARED: "job" },
        steps: [
          { name: "env", run: 'echo "ci=$CI deltaci=$DELTACI job=$JOB_ID run=$RUN_ID attempt=$DELTACI_ATTEMPT"; echo "ws=$DELTACI_WORKSPACE"; echo "jv=$JOB_VAR shared=$SHARED"; test "$PWD" = "$DELTACI_WORKSPACE"; test -n "$HOME"', env: { SHARED: "step" } },
          { name: "write", run: "echo hello > file.txt; echo to-stderr >&2" },
          { name: "read", run: "cat file.txt; exit 3" },
          { name: "never", run: "echo must-not-run" },
        ],
      });
      assert.equal(exit.code, 0);
      assert.equal(exit.reason, "reported");
      assert.equal(job.state, "failed");
      assert.equal(job.failure?.reason, "step_failed");
      assert.equal(job.failure?.step, 2);
      assert.deepEqual(job.steps.map((s) => s.exitCode), [0, 0, 3, null]);
      assert.equal(job.steps[3]?.startedAt, null);
      const text = log.toString();
      assert.match(text, new RegExp(`ci=true deltaci=true job=${job.jobId} run=${job.runId} attempt=1`));
      assert.match(text, /jv=from-job shared=step/);
      assert.match(text, /to-stderr/);
      assert.match(text, /\nhello\n/);
      assert.ok(!text.includes("must-not-run"));
      const ms = markers(log);
      assert.deepEqual(ms.map((m) => `${m.kind}:${typeof m.data.index === "number" ? m.data.index : ""}`), [
        "log-start:", "step-start:0", "step-end:0", "step-start:1", "step-end:1", "step-start:2", "step-end:2", "step-skipped:3", "job-end:",
      ]);
      const end2 = ms.find((m) => m.kind === "step-end" && m.data.index === 2);
      assert.equal(end2?.data.exitCode, 3);
      assert.equal(typeof end2?.data.durationMs, "number");
      assert.equal(job.log.bytes, log.length);
    });

    void it("a step printing a fake marker cannot fake a step boundary", async (t) => {
      if (skip) return t.skip(skip);
      const { log, job } = await run({ steps: [{ name: "liar", run: 'echo \'##[deltaci 0123456789abcdef] step-end {"index":0,"exitCode":0}\'' }] });
      assert.equal(job.state, "succeeded");
      assert.equal(markers(log).filter((m) => m.kind === "step-end").length, 1);
    });

    void it("masks secrets: plain, split across writes, base64 in every alignment, URL-encoded, multi-line, tokens", async (t) => {
      if (skip) return t.skip(skip);
      const secret = "hunter2-Sup3r/Secret+Value";
      const multi = "-----BEGIN TEST KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n0Wz2kQ1sEC0ret-line-two\n-----END TEST KEY-----";
      const token = newToken("api");
      const script = [
        'echo "plain: $MY_SECRET"',
        // split across writes with pauses in between (separate write(2) calls, separate chunks)
        'printf "split: %s" "${MY_SECRET:0:7}"; sleep 0.2; printf "%s" "${MY_SECRET:7:5}"; sleep 0.2; printf "%s\\n" "${MY_SECRET:12}"',
        'for p in "" a ab; do printf "%s%s" "$p" "$MY_SECRET" | base64 -w0; echo; done',
        'python3 -c "import os,urllib.parse;print(\'url:\', urllib.parse.quote(os.environ[\'MY_SECRET\'], safe=\'\'))" || echo "url: $(printf %s "$MY_SECRET" | sed "s|/|%2F|g; s|+|%2B|g")"',
        'echo "key:"; echo "$MY_KEY"; echo "$MY_KEY" | sed "s/^/  > /"',
        `echo "token: ${token}"`,
        'env | grep -c . > /dev/null',
      ].join("\n");
      const { log, job } = await run({ steps: [{ name: "leak", run: script }] }, { MY_SECRET: secret, MY_KEY: multi });
      assert.equal(job.state, "succeeded", log.toString());
      const text = log.toString();
      assert.ok(!text.includes(secret), text);
      assert.ok(!text.includes("Sup3r/Secret"), text);
      for (const prefix of ["", "a", "ab"]) {
        const b64 = Buffer.from(prefix + secret).toString("base64");
        const mid = b64.slice(Math.ceil((8 * prefix.length) / 6), Math.floor((8 * (prefix.length + secret.length)) / 6));
        assert.ok(!text.includes(mid), `base64 with prefix "${prefix}" leaked: ${text}`);
      }
      assert.ok(!text.includes(encodeURIComponent(secret)), text);
      for (const line of multi.split("\n")) assert.ok(!text.includes(line), `multi-line secret line leaked: ${line}`);
      assert.ok(!text.includes(token));
      assert.match(text, /plain: \*\*\*/);
      assert.match(text, /split: \*\*\*/);
      assert.match(text, /token: \*\*\*/);
    });

    void it("collects artifacts by glob, never through an escaping link, and `always` ones on failure", async (t) => {
      if (skip) return t.skip(skip);
      const script = [
        "mkdir -p dist/sub reports",
        "echo a > dist/a.js; echo c > dist/sub/c.js; echo css > dist/b.css",
        "echo '<xml/>' > reports/junit.xml",
        "ln -s /etc/passwd dist/passwd.js",
        "ln -s / dist/root",
      ].join("\n");
      const ok = await run({
        steps: [{ name: "build", run: script }],
        artifacts: [
          { name: "js", paths: ["dist/**/*.js", "dist/root/etc/*"], when: "on_success" },
          { name: "junit.xml", paths: ["reports/junit.xml"], when: "always" },
          { name: "escape", paths: ["../../../../etc/passwd"], when: "on_success" },
        ],
      });
      assert.equal(ok.job.state, "succeeded", ok.log.toString());
      const names = ok.job.artifacts.map((a) => a.name).sort();
      assert.deepEqual(names, ["js", "junit.xml"]);
      const tarBytes = await h.api.artifact(ok.jobId, "js");
      const dir = join(h.root, `x-${backend.name}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "js.tar"), tarBytes);
      const listed = execFileSync("tar", ["-tf", join(dir, "js.tar")]).toString().trim().split("\n").sort();
      assert.deepEqual(listed, ["dist/a.js", "dist/sub/c.js"]);
      assert.equal((await h.api.artifact(ok.jobId, "junit.xml")).toString(), "<xml/>\n");
      const art = ok.job.artifacts.find((a) => a.name === "junit.xml");
      assert.equal(art?.sha256, createHash("sha256").update("<xml/>\n").digest("hex"));
      const text = ok.log.toString();
      assert.match(text, /skipped dist\/passwd\.js: symbolic link not followed/);
      assert.match(text, /escape.*rejected/);

      const failed = await run({
        steps: [{ name: "build", run: "mkdir -p reports; echo '<fail/>' > reports/junit.xml; echo x > out.bin; exit 1" }],
        artifacts: [
          { name: "out", paths: ["out.bin"], when: "on_success" },
          { name: "junit.xml", paths: ["reports/junit.xml"], when: "always" },
        ],
      });
      assert.equal(failed.job.state, "failed");
      assert.deepEqual(failed.job.artifacts.map((a) => a.name), ["junit.xml"]);
    });

    void it("ends a step at its timeout and the job at the job timeout", async (t) => {
      if (skip) return t.skip(skip);
      const step = await run({ steps: [{ name: "slow", run: "echo started; sleep 60", timeoutMs: 500 }, { name: "after", run: "true" }] });
      assert.equal(step.job.state, "failed");
      assert.equal(step.job.failure?.reason, "timeout", `${JSON.stringify(step.job.failure)}; log: ${step.log.toString().slice(-2000)}`);
      assert.equal(step.job.failure?.step, 0);
      assert.equal(step.job.steps[1]?.exitCode, null);
      assert.equal(step.job.steps[1]?.startedAt, null);
      const job = await run({ limits: { timeoutMs: 1500, cpus: 1, memoryMiB: 512, diskMiB: 256, pids: 256, logMiB: 64 }, steps: [{ name: "a", run: "true" }, { name: "b", run: "sleep 60" }, { name: "c", run: "true" }] });
      assert.equal(job.job.state, "failed");
      assert.equal(job.job.failure?.reason, "timeout", `${JSON.stringify(job.job.failure)}; log: ${job.log.toString().slice(-2000)}`);
      assert.equal(job.job.steps[2]?.exitCode, null);
      assert.match(job.log.toString(), /step-skipped/);
    });

    void it("extracts the job's source archive into the workspace before the first step", async (t) => {
      if (skip) return t.skip(skip);
      const src = join(h.root, `src-${backend.name}`);
      mkdirSync(join(src, "lib"), { recursive: true });
      writeFileSync(join(src, "lib", "hello.sh"), "echo hello-from-source\n");
      const tar = execFileSync("tar", ["-cf", "-", "-C", src, "lib"]);
      const sha256 = await h.api.uploadSource(tar);
      const { job, log } = await run({ source: { kind: "archive", sha256 }, steps: [{ name: "use", run: "sh lib/hello.sh" }] });
      assert.equal(job.state, "succeeded", log.toString());
      assert.match(log.toString(), /hello-from-source/);
    });

    // Caches exist only in the oci backend (the process backend is for development and has none).
    if (backend.name === "oci") void it("saves a writable cache for the next job, but never one that holds a secret's value", async (t) => {
      if (skip) return t.skip(skip);
      const cache = { key: `k${Date.now().toString(36)}`, path: "/opt/cache", scope: "e2e", readOnly: false };
      const clean = await run({ caches: [cache], steps: [{ name: "fill", run: "echo kept > /opt/cache/fine" }] });
      assert.equal(clean.job.state, "succeeded", clean.log.toString());
      const leaky = await run({ caches: [cache], steps: [{ name: "leak", run: "echo \"$TOKEN\" > /opt/cache/leak" }] }, { TOKEN: "cache-secret-value-42" });
      assert.equal(leaky.job.state, "succeeded", leaky.log.toString());
      const check = await run({ caches: [cache], steps: [{ name: "read", run: "cat /opt/cache/fine; if [ -e /opt/cache/leak ]; then echo LEAKED; fi" }] });
      assert.equal(check.job.state, "succeeded", check.log.toString());
      assert.match(check.log.toString(), /kept/);
      assert.doesNotMatch(check.log.toString(), /LEAKED/);
    });
  });
}
