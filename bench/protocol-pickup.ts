/**
 * Protocol-level pickup: a runner already waits in `lease`; how long after `POST /v1/jobs`
 * returns does its lease response arrive? p50/p99 over N jobs. Baseline in the same run: the
 * round trip of a bare Fastify route and of the server's /healthz.
 * Usage: tsx bench/protocol-pickup.ts [jobs=1000]
 */
import { performance } from "node:perf_hooks";
import { Client, sessions, spawnBare, spawnDeltaci, summary, jobSpec } from "./lib/protocol-client.ts";

const N = Number(process.argv[2] ?? 1000);

async function rtt(c: Client, path: string, n: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await c.call("GET", path, null);
    out.push(performance.now() - t);
  }
  return out;
}

async function waitForWaiter(c: Client): Promise<void> {
  for (;;) {
    const h = await c.call("GET", "/healthz", null);
    if (h.body.leaseWaiters === 1) return;
  }
}

async function main(): Promise<void> {
  const bare = await spawnBare();
  const srv = await spawnDeltaci();
  const c = new Client(srv.url);
  const b = new Client(bare.url);
  try {
    const bareRtt = await rtt(b, "/bare", Math.min(N, 1000));
    const healthRtt = await rtt(c, "/healthz", Math.min(N, 1000));
    const sess = await sessions(c, srv.controllerToken, N);
    const pickup: number[] = [];
    const fromSend: number[] = [];
    const submitRtt: number[] = [];
    for (let i = 0; i < N; i++) {
      let leaseAt = 0;
      const leased = c.call("POST", "/v1/runner/lease", sess[i] as string, { json: { waitMs: 60_000 } }).then((r) => {
        leaseAt = performance.now();
        if (r.status !== 200) throw new Error(`lease: ${r.status}`);
      });
      await waitForWaiter(c);
      const sent = performance.now();
      const sub = await c.call("POST", "/v1/jobs", srv.apiToken, { json: { spec: jobSpec(), fork: false } });
      const returned = performance.now();
      if (sub.status !== 201) throw new Error(`submit: ${sub.status}`);
      await leased;
      pickup.push(leaseAt - returned);
      fromSend.push(leaseAt - sent);
      submitRtt.push(returned - sent);
    }
    process.stdout.write(JSON.stringify({
      bench: "protocol-pickup",
      jobs: N,
      unit: "ms",
      goal: "pickup p50 < 5 ms",
      pickupAfterSubmitReturned: summary(pickup),
      leaseAfterSubmitSent: summary(fromSend),
      submitRoundTrip: summary(submitRtt),
      baseline: { bareFastifyGetRoundTrip: summary(bareRtt), healthzRoundTrip: summary(healthRtt) },
      note: "negative pickup: the lease response arrived before the submit response (both are sent after the same commit)",
    }) + "\n");
  } finally {
    await c.close();
    await b.close();
    await srv.stop();
    await bare.stop();
  }
}

await main();
