/**
 * End to end on an S3 blob store (a real S3 server from scripts/test-services.sh): `deltaci up
 * --blob-store s3://…` (server + controller + process runners as child processes), a job whose
 * source archive and artifacts go straight to the bucket through presigned (multipart) uploads,
 * downloaded byte-exact with `deltaci artifacts --download`; tampered and short uploads to the
 * same server are refused.
 */
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { request } from "undici";
import { testS3Env, type TestS3Env } from "../src/config/server-config.ts";
import { parseJson, runCli, startCli, type CliRun } from "./cli-helpers.ts";
import { capabilities, completeBody, jobSpec } from "./server-harness.ts";

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let env: TestS3Env;
let up: CliRun;
let root: string;
let server: string;
let prefix: string;

before(async () => {
  env = testS3Env();
  root = mkdtempSync(join(tmpdir(), "deltaci-cli-s3-"));
  prefix = `e2e-${randomBytes(6).toString("hex")}`;
  up = startCli(
    [
      "up", "--listen", "127.0.0.1:0", "--data-dir", join(root, "data"), "--work-root", join(root, "runners"), "--isolation", "process",
      "--max-runners", "2", "--min-idle", "1", "--log-level", "warn",
      "--blob-store", `s3://${env.bucket}/${prefix}`, "--s3-endpoint", env.endpoint, "--s3-region", env.region, "--s3-path-style",
      "--s3-multipart-threshold", "5Mi", "--s3-part-size", "5Mi",
    ],
    { cwd: root, timeoutMs: 900_000 },
  );
  await up.waitFor(/server ready at http:\/\/127\.0\.0\.1:\d+[^]*API token: .*\n/);
  server = /server ready at (http:\/\/127\.0\.0\.1:\d+)/.exec(up.output())?.[1] ?? "";
});

after(async () => {
  if (up.child.exitCode === null) up.child.kill("SIGTERM");
  await up.result;
  rmSync(root, { recursive: true, force: true });
});

const tokenFile = () => join(root, "data", "api-token");
const cli = (args: string[], cwd: string) => runCli([...args, "--token-file", tokenFile()], { cwd, env: { DELTACI_SERVER: server } });

async function call(method: string, path: string, token: string, json?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await request(server + path, {
    method: method as "POST", headers: { authorization: `Bearer ${token}`, ...(json === undefined ? {} : { "content-type": "application/json" }) },
    body: json === undefined ? null : JSON.stringify(json),
  });
  const text = await res.body.text();
  return { status: res.statusCode, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

void test("a job's source and artifacts travel through the bucket; the CLI downloads them byte-exact", async () => {
  const work = mkdtempSync(join(root, "repo-"));
  const input = randomBytes(12 * MiB + 4321);
  writeFileSync(join(work, "input.bin"), input);
  writeFileSync(join(work, "deltaci.yml"), [
    "jobs:",
    "  copy:",
    "    steps:",
    "      - {name: copy, run: 'mkdir -p out && cp input.bin out/big.bin && echo small > out/small.txt'}",
    "    artifacts: [{name: big.bin, path: out/big.bin}, {name: small.txt, path: out/small.txt}]",
    "",
  ].join("\n"));
  const sub = await cli(["submit", "--job", "copy", "--json"], work);
  assert.equal(sub.code, 0, sub.stderr);
  const jobId = parseJson<{ jobs: Array<{ jobId: string }> }>(sub.stdout).jobs[0]?.jobId ?? "";
  const logs = await cli(["logs", jobId, "-f"], work);
  assert.equal(logs.code, 0, logs.stderr);
  let st: { state: string; artifacts: Array<{ name: string; sha256: string }> } = { state: "", artifacts: [] };
  for (let i = 0; i < 600 && !["succeeded", "failed", "errored", "canceled"].includes(st.state); i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 250));
    st = parseJson((await cli(["status", jobId, "--json"], work)).stdout);
  }
  assert.equal(st.state, "succeeded", logs.stdout);
  assert.deepEqual(st.artifacts.map((a) => a.name).sort(), ["big.bin", "small.txt"]);

  const dl = join(root, "dl");
  const arts = await cli(["artifacts", jobId, "--download", dl, "--json"], work);
  assert.equal(arts.code, 0, arts.stderr);
  assert.ok(readFileSync(join(dl, "big.bin", "out", "big.bin")).equals(input), "big.bin byte-exact");
  assert.equal(readFileSync(join(dl, "small.txt", "out", "small.txt"), "utf8"), "small\n");

  // The bytes live in the bucket (verified blobs only, no staging left), not under the data dir.
  const s3 = new S3Client({ endpoint: env.endpoint, region: env.region, forcePathStyle: true, credentials: env.credentials });
  try {
    const keys = ((await s3.send(new ListObjectsV2Command({ Bucket: env.bucket, Prefix: `${prefix}/` }))).Contents ?? []).map((o) => o.Key ?? "");
    assert.ok(keys.includes(`${prefix}/cas/sha256/${sha(input)}`), keys.join("\n"));
    assert.deepEqual(keys.filter((k) => k.includes("/uploads/")), [], "no staged upload left behind");
  } finally {
    s3.destroy();
  }
  assert.throws(() => readFileSync(join(root, "data", "cas", "sha256", sha(input).slice(0, 2), sha(input))));
});

void test("the server process refuses a tampered and a short upload (422), and keeps nothing", async () => {
  const apiToken = readFileSync(tokenFile(), "utf8").trim();
  const ctlToken = readFileSync(join(root, "data", "controller-token"), "utf8").trim();
  // A runner of our own, on a label no runner of `up` has, so this job is ours alone.
  const label = `tamper-${randomBytes(4).toString("hex")}`;
  const reg = await call("POST", "/v1/controller/registrations", ctlToken, { count: 1, labels: [label] });
  const regToken = (reg.body.tokens as string[])[0] ?? "";
  const session = await call("POST", "/v1/runner/register", regToken, { name: "t", version: "1", capabilities: capabilities({ labels: [label], isolation: ["process"] }) });
  assert.equal(session.status, 201, JSON.stringify(session.body));
  const job = await call("POST", "/v1/jobs", apiToken, { spec: jobSpec({ runsOn: { labels: [label] } }), fork: false });
  assert.equal(job.status, 201, JSON.stringify(job.body));
  const lease = await call("POST", "/v1/runner/lease", String(session.body.sessionToken), { waitMs: 5000 });
  assert.equal(lease.status, 200, JSON.stringify(lease.body));
  const leaseToken = String((lease.body.lease as { leaseToken: string }).leaseToken);

  const data = randomBytes(200_000);
  const evil = Buffer.from(data);
  evil[7] = (evil[7] ?? 0) ^ 0x80;
  for (const [name, bytes] of [["tampered.bin", evil], ["short.bin", data.subarray(0, 150_000)]] as const) {
    const created = await call("POST", "/v1/runner/artifacts", leaseToken, { name, size: data.length, sha256: sha(data) });
    const upload = created.body.upload as { url: string; commitUrl: string };
    assert.equal((await fetch(upload.url, { method: "PUT", body: bytes })).status, 200);
    const commit = await call("POST", upload.commitUrl, leaseToken);
    assert.equal(commit.status, 422, JSON.stringify(commit.body));
    assert.equal((commit.body.error as { code: string }).code, "E_DIGEST_MISMATCH");
  }
  const done = await call("POST", "/v1/runner/complete", leaseToken, completeBody());
  assert.equal(done.status, 200, JSON.stringify(done.body));
  const st = await call("GET", `/v1/jobs/${String(job.body.jobId)}`, apiToken);
  assert.deepEqual(st.body.artifacts, []);
});
