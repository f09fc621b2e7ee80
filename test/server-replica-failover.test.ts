/**
 * Failover between replicas: a runner given both URLs (`A,B`) runs a job while A is killed with
 * SIGKILL; it carries on with B (same lease, same log offsets) and the job completes with its
 * log byte-exact. Real runner, process sandbox, two `deltaci server` processes on one database.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { systemClock } from "../src/base/clock.ts";
import { ProcessSandboxFactory } from "../src/sandbox/process/process-sandbox.ts";
import { ReplicaSet } from "./support/replicas.ts";
import { Api, jobSpec, memoryLogger, nonceOf, parseMarker, runInProcess, type Harness } from "./support/runner-harness.ts";

const factory = new ProcessSandboxFactory({ clock: systemClock, logger: { info: () => {}, warn: () => {} } });
const LINES = 400;
const step = { name: "count", run: `for i in $(seq 1 ${LINES}); do printf 'line %d %060d\\n' "$i" "$i"; if [ $((i % 40)) = 0 ]; then sleep 0.2; fi; done` };
const expected = Array.from({ length: LINES }, (_, k) => `line ${k + 1} ${String(k + 1).padStart(60, "0")}\n`).join("");

function stepOutput(log: Buffer): string {
  const lines = log.toString().split("\n");
  const nonce = nonceOf(lines[0] ?? "") ?? "";
  const start = lines.findIndex((l) => parseMarker(l, nonce)?.kind === "step-start");
  const end = lines.findIndex((l) => parseMarker(l, nonce)?.kind === "step-end");
  assert.ok(start >= 0 && end > start, "step markers present");
  return lines.slice(start + 1, end).map((l) => `${l}\n`).join("");
}

void test("kill -9 of replica A mid-job: the runner fails over to B, the job completes, the log is byte-exact", async () => {
  const set = await ReplicaSet.create(["--lease-ttl", "10s", "--heartbeat-interval", "1s", "--sweep-interval", "200ms"]);
  const apis: Api[] = [];
  try {
    const a = await set.start("a");
    const b = await set.start("b");
    const viaA = new Api(a.api.url, set.apiToken, set.controllerToken);
    const viaB = new Api(b.api.url, set.apiToken, set.controllerToken);
    apis.push(viaA, viaB);
    const h = { root: set.root, api: viaA } as unknown as Harness;
    const logger = memoryLogger();
    const jobId = await viaA.submit(jobSpec({ steps: [step] }));
    const running = runInProcess(h, factory, { serverUrl: `${a.api.url},${b.api.url}`, logger, idleTimeoutMs: 1_000 });
    await viaB.waitFor(jobId, (j) => j.log.bytes > 0, "the first log bytes");
    await a.kill9();
    const done = await viaB.waitDone(jobId, 60_000);
    assert.equal(done.state, "succeeded", JSON.stringify(done.transitions.slice(-4)));
    assert.equal(done.attempts.length, 1, "the same attempt finished: no lease was lost");
    assert.doesNotMatch(done.attempts[0]?.reason ?? "", /differs/, "the server's log digest matches the runner's");
    assert.equal(stepOutput(await viaB.log(jobId)), expected);
    await running;
  } finally {
    for (const api of apis) await api.close();
    await set.close();
  }
});
