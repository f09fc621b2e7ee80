/** The protocol cycle the cycle benchmarks run: lease → heartbeat → log 4 KiB → complete, and what it needs prepared. */
import { createHash } from "node:crypto";
import { Client, jobSpec, sessions } from "./protocol-client.ts";

const LOG = Buffer.alloc(4096, "x");
const LOG_SHA = createHash("sha256").update(LOG).digest("hex");

/** `n` runner sessions and `n` queued jobs on one server (before the clock starts). */
export async function prepareCycles(c: Client, tokens: { apiToken: string; controllerToken: string }, n: number): Promise<string[]> {
  const sess = await sessions(c, tokens.controllerToken, n);
  for (let i = 0; i < n; i += 64) {
    await Promise.all(Array.from({ length: Math.min(64, n - i) }, () => c.call("POST", "/v1/jobs", tokens.apiToken, { json: { spec: jobSpec(), fork: false } })));
  }
  return sess;
}

/** One full cycle per session, `concurrency` at a time; runner `w` talks to server `w % clients.length`. Returns the errors. */
export async function runCycles(clients: Client[], sess: readonly string[], concurrency: number): Promise<number> {
  let next = 0;
  let errors = 0;
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    const c = clients[w % clients.length] as Client;
    for (let i = next++; i < sess.length; i = next++) {
      const l = await c.call("POST", "/v1/runner/lease", sess[i] as string, { json: { waitMs: 0 } });
      if (l.status !== 200) {
        errors++;
        continue;
      }
      const tok = l.body.lease.leaseToken as string;
      const hb = await c.call("POST", "/v1/runner/heartbeat", tok, { json: { state: "running", step: 0, logBytes: 0 } });
      const lg = await c.call("PUT", "/v1/runner/log", tok, { body: LOG, headers: { "content-type": "application/octet-stream", "content-range": `bytes 0-${LOG.length - 1}/*` } });
      const done = await c.call("POST", "/v1/runner/complete", tok, {
        json: { result: "succeeded", exitCode: 0, failure: null, steps: [], artifacts: [], log: { bytes: LOG.length, sha256: LOG_SHA } },
      });
      if (hb.status !== 200 || lg.status !== 202 || done.status !== 200) errors++;
    }
  }));
  return errors;
}
