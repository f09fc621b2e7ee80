/**
 * The conformance suite of the Sandbox seam: every backend passes it (STYLE.md). Call
 * `sandboxConformance` from a test file with a harness that makes specs and finds leftovers.
 */
import assert from "node:assert/strict";
import { createHash, randomInt } from "node:crypto";
import { readdirSync, readFileSync, existsSync } from "node:fs";
import { after, describe, it } from "node:test";
import { setTimeout as delay } from "node:timers/promises";
import type { Sandbox, SandboxFactory, SandboxSpec, StepOutput, StepResult, StepSpec } from "./types.ts";

export interface ConformanceHarness {
  factory: SandboxFactory;
  /** A fresh spec for one job (its own slot or work dir as the backend needs). */
  spec(overrides?: Partial<SandboxSpec>): SandboxSpec;
  /** What the job's slot still holds on the host; empty when clean. */
  leftovers(spec: SandboxSpec): Promise<string[]>;
  /** Builds a tar archive of `files` and returns its host path. */
  makeArchive(files: Record<string, string>): Promise<string>;
}

export interface CollectedStep {
  stdout: Buffer;
  stderr: Buffer;
  result: StepResult;
}

/** A step's output copied as it is read (its chunks are valid only during the call); `onStdout` sees each copy too. */
export function collector(onStdout: (chunk: Buffer) => void = () => {}): StepOutput & { stdoutBytes(): Buffer; stderrBytes(): Buffer } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  return {
    stdout: (c) => {
      const copy = Buffer.from(c);
      out.push(copy);
      onStdout(copy);
    },
    stderr: (c) => void err.push(Buffer.from(c)),
    stdoutBytes: () => Buffer.concat(out),
    stderrBytes: () => Buffer.concat(err),
  };
}

export function stepSpec(run: string, over: Partial<StepSpec> = {}): StepSpec {
  return { run, shell: null, env: {}, workingDirectory: null, timeoutMs: 120_000, ...over };
}

export async function runStep(sb: Sandbox, run: string, over: Partial<StepSpec> = {}): Promise<CollectedStep> {
  const output = collector();
  const result = await sb.start(stepSpec(run, over), output).done;
  return { stdout: output.stdoutBytes(), stderr: output.stderrBytes(), result };
}

/** Host pids whose command line contains `marker`. */
export function hostProcessesWith(marker: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ").includes(marker)) out.push(Number(name));
    } catch {}
  }
  return out;
}

export function sandboxConformance(name: string, harness: () => Promise<ConformanceHarness>): void {
  void describe(`sandbox conformance: ${name}`, { timeout: 600_000 }, () => {
    let h: ConformanceHarness;
    const open: Array<{ sb: Sandbox; spec: SandboxSpec }> = [];
    const make = async (over: Partial<SandboxSpec> = {}) => {
      h ??= await harness();
      const spec = h.spec(over);
      const sb = await h.factory.create(spec);
      open.push({ sb, spec });
      return { sb, spec };
    };
    /** dispose() resolves with the job's data off its path; once the slot settled, nothing is left. */
    const finish = async (sb: Sandbox, spec: SandboxSpec) => {
      await sb.dispose();
      assert.equal(existsSync(sb.workspaceOnHost), false, "the workspace is gone from its path when dispose resolves");
      await h.factory.settle(spec.slot);
      assert.deepEqual(await h.leftovers(spec), [], "nothing of the job is left once its slot settled");
    };
    after(async () => {
      for (const { sb } of open) await sb.dispose().catch(() => {});
    });

    void it("runs steps in order with their env, working directory and exit codes", async () => {
      const { sb, spec } = await make();
      const a = await runStep(sb, 'echo "$FOO" > first.txt; pwd', { env: { FOO: "one two" } });
      assert.equal(a.result.exitCode, 0);
      assert.equal(a.stdout.toString(), `${sb.workspaceInSandbox}\n`);
      const b = await runStep(sb, "cat ../../first.txt; pwd; exit 7", { workingDirectory: "sub/dir" });
      assert.equal(b.stdout.toString(), `one two\n${sb.workspaceInSandbox}/sub/dir\n`);
      assert.deepEqual([b.result.exitCode, b.result.signal, b.result.limit, b.result.stopped], [7, null, null, false]);
      const c = await runStep(sb, 'test "$DELTACI_WORKSPACE" = "$PWD" && test -n "$HOME" && test -w "$HOME"');
      assert.equal(c.result.exitCode, 0, c.stderr.toString());
      assert.throws(() => sb.start(stepSpec("true", { workingDirectory: "../outside" }), collector()));
      // a value no environment can hold is refused at once, and the sandbox stays usable
      assert.throws(() => sb.start(stepSpec("true", { env: { BAD: "x\0y" } }), collector()));
      const d = await runStep(sb, "echo after");
      assert.equal(d.stdout.toString(), "after\n");
      await finish(sb, spec);
    });

    void it("reports a signal that ended the step", async () => {
      const { sb, spec } = await make();
      const r = await runStep(sb, "kill -USR1 $$; sleep 5");
      assert.deepEqual([r.result.exitCode, r.result.signal], [null, "SIGUSR1"]);
      await finish(sb, spec);
    });

    void it("keeps stdout and stderr apart and byte-exact", async () => {
      const { sb, spec } = await make();
      const r = await runStep(sb, "for i in 1 2 3 4 5; do printf 'out%s\\n' $i; printf 'err%s\\n' $i >&2; done; printf '\\001\\377\\000end'");
      assert.equal(r.stdout.toString("latin1"), "out1\nout2\nout3\nout4\nout5\n\x01\xff\x00end");
      assert.equal(r.stderr.toString(), "err1\nerr2\nerr3\nerr4\nerr5\n");
      await finish(sb, spec);
    });

    void it("delivers 50 MiB of output without loss", async () => {
      const { sb, spec } = await make();
      const bytes = 50 * 1024 * 1024;
      const r = await runStep(sb, `yes 0123456789abcdef | head -c ${bytes}`);
      assert.equal(r.result.exitCode, 0);
      assert.equal(r.stdout.length, bytes);
      const expected = createHash("sha256").update(Buffer.alloc(bytes, "0123456789abcdef\n")).digest("hex");
      assert.equal(createHash("sha256").update(r.stdout).digest("hex"), expected);
      await finish(sb, spec);
    });

    void it("ends a step at its timeout with the reason timeout", async () => {
      const { sb, spec } = await make();
      const marker = String(randomInt(10_000_000, 99_999_999));
      const r = await runStep(sb, `sleep ${marker} & sleep 3600`, { timeoutMs: 300 });
      assert.equal(r.result.limit?.reason, "timeout");
      assert.match(r.result.limit?.message ?? "", /timeout of 300 ms/);
      assert.deepEqual(hostProcessesWith(`sleep ${marker}`), []);
      await finish(sb, spec);
    });

    void it("stop() ends a step that ignores SIGTERM, with its background children", async () => {
      const { sb, spec } = await make();
      const marker = String(randomInt(10_000_000, 99_999_999));
      // The process backend cannot follow a process that leaves its group (setsid): no isolation.
      const escapee = name === "process" ? "" : `(trap '' TERM; setsid sleep ${marker} &);`;
      let seen = "";
      let sawStarted!: () => void;
      const started = new Promise<void>((resolve) => (sawStarted = resolve));
      const p = sb.start(stepSpec(`trap '' TERM; sleep ${marker} & ${escapee} echo started; while :; do sleep 0.1; done`), collector((d) => {
        seen += d.toString();
        if (seen.includes("started")) sawStarted();
      }));
      await started;
      // positive control: the scan does see the background process (once it has exec'd sleep)
      for (let i = 0; i < 400 && hostProcessesWith(`sleep ${marker}`).length === 0; i++) await delay(25);
      assert.ok(hostProcessesWith(`sleep ${marker}`).length >= 1, "positive control: the background process is seen");
      p.stop(300);
      const result = await p.done;
      assert.equal(result.stopped, true);
      assert.equal(result.limit, null);
      assert.equal(result.signal, "SIGKILL");
      assert.deepEqual(hostProcessesWith(`sleep ${marker}`), [], "no background process survives");
      const next = await runStep(sb, "echo still usable");
      assert.equal(next.stdout.toString(), "still usable\n");
      await finish(sb, spec);
    });

    void it("kills what a finished step left running", async () => {
      const { sb, spec } = await make();
      const marker = String(randomInt(10_000_000, 99_999_999));
      const r = await runStep(sb, `sleep ${marker} >/dev/null 2>&1 & echo bg`);
      assert.equal(r.result.exitCode, 0);
      assert.deepEqual(hostProcessesWith(`sleep ${marker}`), []);
      await finish(sb, spec);
    });

    void it("extracts the source archive into the workspace", async () => {
      h ??= await harness();
      const archive = await h.makeArchive({ "README.md": "hello\n", "src/main.sh": "echo main\n" });
      const { sb, spec } = await make({ sourceArchive: archive });
      const r = await runStep(sb, "cat README.md; sh src/main.sh");
      assert.equal(r.stdout.toString(), "hello\nmain\n");
      assert.equal(existsSync(sb.workspaceOnHost), true);
      await finish(sb, spec);
    });

    void it("a prewarmed sandbox serves the next job of its shape, with that job's source", async () => {
      h ??= await harness();
      const archive = await h.makeArchive({ "job.txt": "from the job\n" });
      const spec = h.spec({ sourceArchive: archive });
      void h.factory.prewarm(spec);
      const sb = await h.factory.create(spec);
      open.push({ sb, spec });
      const r = await runStep(sb, 'cat job.txt; ls -A | wc -l; test "$PWD" = "$DELTACI_WORKSPACE"');
      assert.equal(r.stdout.toString(), "from the job\n1\n", r.stderr.toString());
      assert.equal(r.result.exitCode, 0);
      await finish(sb, spec);
      await h.factory.close();
      assert.deepEqual(await h.leftovers(spec), []);
    });

    void it("a prewarmed sandbox of another shape is disposed of, and close() disposes of one nobody took", async () => {
      h ??= await harness();
      const first = h.spec();
      void h.factory.prewarm(first);
      const other = { ...first, jobId: `${first.jobId}-other`, limits: { ...first.limits, memoryMiB: first.limits.memoryMiB + 64 } };
      const sb = await h.factory.create(other);
      open.push({ sb, spec: other });
      const r = await runStep(sb, "echo ok");
      assert.equal(r.stdout.toString(), "ok\n");
      await sb.dispose();
      await h.factory.close();
      assert.deepEqual(await h.leftovers(other), [], "the unused warm sandbox is gone too");
      const idle = h.spec();
      void h.factory.prewarm(idle);
      await h.factory.close();
      assert.deepEqual(await h.leftovers(idle), [], "close() disposes of a warm sandbox nobody took");
    });

    void it("reapSlot() discards the slot's warm sandbox: the next job builds a working one", async () => {
      h ??= await harness();
      const spec = h.spec();
      await h.factory.prewarm(spec);
      await h.factory.reapSlot(spec.slot);
      assert.deepEqual(await h.leftovers(spec), []);
      const sb = await h.factory.create(spec);
      open.push({ sb, spec });
      const r = await runStep(sb, "echo fresh");
      assert.equal(r.stdout.toString(), "fresh\n");
      await finish(sb, spec);
    });

    void it("dispose() during a step kills it, removes everything, and is idempotent", async () => {
      const { sb, spec } = await make();
      const marker = String(randomInt(10_000_000, 99_999_999));
      const p = sb.start(stepSpec(`trap '' TERM; sleep ${marker}`), collector());
      const done = p.done;
      await sb.dispose();
      await done;
      await sb.dispose();
      assert.equal(existsSync(sb.workspaceOnHost), false);
      assert.deepEqual(hostProcessesWith(`sleep ${marker}`), [], "no process of the job is left when dispose resolves");
      await h.factory.settle(spec.slot);
      assert.deepEqual(await h.leftovers(spec), []);
      assert.throws(() => sb.start(stepSpec("true"), collector()));
    });

    void it("isSlotClean(): not for a slot it never reaped; yes after reapSlot and across the slot's jobs", async () => {
      h ??= await harness();
      const spec = h.spec();
      assert.equal(h.factory.isSlotClean(spec.slot), false, "a slot this factory never reaped may hold anything");
      await h.factory.reapSlot(spec.slot);
      assert.equal(h.factory.isSlotClean(spec.slot), true);
      const sb = await h.factory.create(spec);
      open.push({ sb, spec });
      assert.equal((await runStep(sb, "echo one")).stdout.toString(), "one\n");
      await sb.dispose();
      assert.equal(h.factory.isSlotClean(spec.slot), true, "clean while its teardown runs in the background");
      const next = h.spec({ slot: spec.slot });
      await h.factory.prewarm(next);
      assert.equal(h.factory.isSlotClean(spec.slot), true, "a warm sandbox keeps the slot clean");
      const sb2 = await h.factory.create(next);
      open.push({ sb: sb2, spec: next });
      assert.equal((await runStep(sb2, "echo two")).stdout.toString(), "two\n");
      await finish(sb2, next);
      assert.equal(h.factory.isSlotClean(spec.slot), true);
    });

    void it("the next job in a slot sees nothing of the one before (workspace, home, /tmp)", async () => {
      h ??= await harness();
      const first = h.spec();
      const marker = `left-behind-${randomInt(10_000_000, 99_999_999)}`;
      const sb = await h.factory.create(first);
      open.push({ sb, spec: first });
      // The process backend shares the host's /tmp (no isolation): only the others' /tmp is checked.
      const tmp = name === "process" ? "" : `echo ${marker} > /tmp/${marker}.txt;`;
      const w = await runStep(sb, `${tmp} echo ${marker} > ws.txt; echo ${marker} > "$HOME/home.txt"; mkdir -p d/e; echo ${marker} > d/e/f`);
      assert.equal(w.result.exitCode, 0, w.stderr.toString());
      await sb.dispose();
      const second = h.spec({ slot: first.slot });
      const sb2 = await h.factory.create(second);
      open.push({ sb: sb2, spec: second });
      const r = await runStep(sb2, `ls -A; ls -A "$HOME"; ${tmp ? `ls -A /tmp | grep -c ${marker} || true` : "echo 0"}`);
      assert.equal(r.stdout.toString(), "0\n", r.stderr.toString());
      await finish(sb2, second);
    });
  });
}
