/**
 * `::add-mask::VALUE` end to end: a step fetches a credential at run time (here: random bytes),
 * announces it, and from then on the job's log (the rest of this step, later steps, both
 * streams, split and encoded forms) shows `***`; the command line is stored as
 * `::add-mask::***`. A fork job (no secrets at all) may use it too. The real server, the real
 * runner, the process sandbox and crun where this machine runs it.
 */
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { systemClock } from "../src/base/clock.ts";
import { CrunSandboxFactory } from "../src/sandbox/oci/crun-sandbox-factory.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import type { SandboxFactory } from "../src/sandbox/types.ts";
import { jobSpec, runInProcess, startHarness, type Harness } from "./support/runner-harness.ts";

const quiet = { info: () => {}, warn: () => {} };

const backends: Array<{ name: string; make: () => Promise<SandboxFactory | string> }> = [
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

// The value exists only inside the job ("rt-" and 36 random hex digits): the test never learns
// it, so it checks that nothing of that shape (raw, or base64 of it) is left in the log.
const FETCH = 'TOKEN="rt-$(head -c 18 /dev/urandom | od -An -tx1 | tr -d " \\n")"';
const STEP1 = [
  FETCH,
  'echo "before-mask-marker"',
  'echo "::add-mask::$TOKEN"',
  'echo "plain: $TOKEN"',
  'printf "split: %s" "$(echo "$TOKEN" | cut -c1-9)"; sleep 0.05; printf "%s\\n" "$(echo "$TOKEN" | cut -c10-)"',
  'printf %s "$TOKEN" | base64',
  'echo "stderr: $TOKEN" >&2',
  'echo "$TOKEN" | sed "s/^/sed: /"',
  'echo "$TOKEN" > token.txt',
].join("\n");
const STEP2 = 'echo "later step: $(cat token.txt)"; printf %s "$(cat token.txt)" | base64 -w0; echo';

for (const backend of backends) {
  void describe(`::add-mask:: end to end (${backend.name})`, () => {
    let h: Harness;
    let factory: SandboxFactory | null = null;
    let skip: string | false = false;
    before(async () => {
      h = await startHarness();
      const f = await backend.make();
      if (typeof f === "string") skip = f;
      else factory = f;
    });
    after(async () => {
      await factory?.close();
      await h?.close();
    });

    for (const fork of [false, true]) {
      void it(`masks a value announced at run time for the rest of the job${fork ? " (fork job)" : ""}`, async (t) => {
        if (skip) return t.skip(skip);
        assert.ok(factory);
        const jobId = await h.api.submit(jobSpec({ steps: [{ name: "fetch a token", run: STEP1 }, { name: "use it", run: STEP2 }] }), undefined, fork);
        const exit = await runInProcess(h, factory);
        assert.equal(exit.reason, "reported", JSON.stringify(exit));
        const job = await h.api.waitDone(jobId, 60_000);
        assert.equal(job.state, "succeeded", JSON.stringify(job.failure));
        const log = (await h.api.log(jobId)).toString();
        assert.match(log, /before-mask-marker/);
        assert.match(log, /^::add-mask::\*\*\*$/m);
        for (const line of ["plain: ***", "split: ***", "stderr: ***", "sed: ***", "later step: ***"]) {
          assert.ok(log.includes(line), `missing "${line}" in:\n${log}`);
        }
        // No form of the value is left: it is "rt-" + 36 hex digits, so any such run is a leak.
        assert.doesNotMatch(log, /rt-[0-9a-f]{6,}/, log);
        assert.doesNotMatch(log, /cnQt[A-Za-z0-9+/]{8,}/, "no base64 of it (it starts with rt-)");
        const lines = log.split("\n");
        const b64Lines = lines.filter((l) => /^[A-Za-z0-9+/]{20,}={0,2}$/.test(l));
        assert.deepEqual(b64Lines, [], "base64 lines of the value are masked");
      });
    }
  });
}
