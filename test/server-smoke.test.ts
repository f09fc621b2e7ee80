import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { startTestServer } from "./server-harness.ts";

void test("happy path: submit, lease, heartbeat, log, complete", async () => {
  const s = await startTestServer({ leaseTtlMs: 10_000 });
  try {
    const jobId = await s.submit({}, { secrets: { TOKEN: "s3cret" } });
    const session = await s.runner();
    const lease = await s.lease(session, 1000);
    assert.ok(lease);
    assert.equal(lease.jobId, jobId);
    assert.deepEqual(lease.job.secrets, { TOKEN: "s3cret" });
    const hb = await s.heartbeat(lease.leaseToken);
    assert.equal(hb.status, 200, JSON.stringify(hb.body));
    assert.equal(hb.body.cancel, "none");
    const l1 = await s.log(lease.leaseToken, 0, "hello ");
    assert.equal(l1.status, 202, JSON.stringify(l1.body));
    const l2 = await s.log(lease.leaseToken, 6, "world\n");
    assert.equal(l2.body.committed, 12);
    const sha = createHash("sha256").update("hello world\n").digest("hex");
    const c = await s.complete(lease.leaseToken, { log: { bytes: 12, sha256: sha } });
    assert.equal(c.status, 200, JSON.stringify(c.body));
    const st = await s.status(jobId);
    assert.equal(st.state, "succeeded");
    assert.ok(!JSON.stringify(st).includes("s3cret"));
    const log = await s.api("GET", `/v1/jobs/${jobId}/log`);
    assert.equal(log.raw.toString(), "hello world\n");
  } finally {
    await s.close();
  }
});
