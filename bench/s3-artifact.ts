/**
 * A 1 GiB artifact to S3 through the server's presigned multipart upload (the runner's own
 * client: parts straight to the bucket, then the commit, where the server reads the object back
 * for size and sha256 and copies it to its content address), against a direct
 * @aws-sdk/lib-storage `Upload` of the same file to the same bucket, in the same run, with the
 * same part size and concurrency. Runs alternate (baseline, presigned, …) so both see the same
 * load. Goal: presigned MiB/s ≥ 0.9 × lib-storage MiB/s (bytes phase; the commit is reported
 * beside it). S3 from the test-service env (scripts/test-services.sh start).
 * Prints one JSON line. Usage: tsx bench/s3-artifact.ts [sizeMiB=1024] [rounds=1]
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { DeleteObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import { systemClock } from "../src/base/clock.ts";
import { commitDirect, sendDirect } from "../src/client/direct-upload.ts";
import { HttpClient } from "../src/client/http.ts";
import { RetryPolicy } from "../src/client/retry-policy.ts";
import { defaults } from "../src/config/defaults.ts";
import { testS3Env } from "../src/config/server-config.ts";
import type { ArtifactUpload } from "../src/protocol/schemas.ts";
import { capabilities, jobSpec, startTestServer } from "../test/server-harness.ts";

const MiB = 1024 * 1024;
const sizeMiB = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 1);
const size = sizeMiB * MiB;
const partSizeBytes = defaults.s3PartSizeBytes;
const concurrency = defaults.directUploadConcurrency;
const env = testS3Env();
const prefix = `bench-${randomBytes(6).toString("hex")}/`;
const dir = await mkdtemp(join(tmpdir(), "deltaci-bench-s3-"));
const file = join(dir, "artifact.bin");

/** Random bytes on disk, hashed on the way (16 MiB of randomness repeated with a counter, so no store can compress it). */
async function makeFile(): Promise<string> {
  const h = createHash("sha256");
  const out = createWriteStream(file);
  const block = randomBytes(16 * MiB);
  for (let i = 0; i < size / (16 * MiB); i++) {
    block.writeUInt32LE(i, 0);
    h.update(block);
    if (!out.write(block)) await new Promise<void>((r) => out.once("drain", () => r()));
  }
  await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
  return h.digest("hex");
}

const sha256 = await makeFile();
const s3 = new S3Client({
  endpoint: env.endpoint, region: env.region, forcePathStyle: true, credentials: env.credentials,
  requestChecksumCalculation: "WHEN_REQUIRED", responseChecksumValidation: "WHEN_REQUIRED",
});
const server = await startTestServer({
  blobStore: { kind: "s3", bucket: env.bucket, prefix, endpoint: env.endpoint, region: env.region, forcePathStyle: true, credentials: env.credentials, partSizeBytes },
});
const http = new HttpClient(server.url, { timeoutMs: 600_000, connections: concurrency + 2 });
const deps = { http, retry: new RetryPolicy({ clock: systemClock }), requestTimeoutMs: 60_000, concurrency };

async function baseline(): Promise<number> {
  const Key = `${prefix}baseline.bin`;
  const t0 = performance.now();
  await new Upload({ client: s3, params: { Bucket: env.bucket, Key, Body: createReadStream(file, { highWaterMark: MiB }) }, partSize: partSizeBytes, queueSize: concurrency }).done();
  const s = (performance.now() - t0) / 1000;
  await s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key }));
  return s;
}

/** One job, one artifact: returns [bytes-phase s, commit s]. Each round is a fresh job, name and digest unchanged: the blob is deleted between rounds so no upload is deduplicated away. */
async function presigned(round: number): Promise<[number, number]> {
  await server.api("POST", "/v1/jobs", { spec: jobSpec({ name: `bench-${round}` }), fork: false });
  const reg = await server.ctl("POST", "/v1/controller/registrations", { count: 1, labels: [] });
  const session = (await server.call("POST", "/v1/runner/register", { token: reg.body.tokens[0], json: { name: "bench", version: "1", capabilities: capabilities() } })).body.sessionToken as string;
  const lease = await server.lease(session, 5000);
  if (!lease) throw new Error("no lease");
  const created = await server.call("POST", "/v1/runner/artifacts", { token: lease.leaseToken, json: { name: "big.bin", size, sha256 } });
  const upload = created.body.upload as ArtifactUpload | null;
  if (!upload?.parts) throw new Error(`expected a multipart upload: ${JSON.stringify(created.body)}`);
  const t0 = performance.now();
  await sendDirect(deps, upload, { file }, size);
  const t1 = performance.now();
  await commitDirect(deps, lease.leaseToken, upload, size);
  const t2 = performance.now();
  await s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: `${prefix}cas/sha256/${sha256}` }));
  return [(t1 - t0) / 1000, (t2 - t1) / 1000];
}

const loadBefore = loadavg();
const base: number[] = [];
const direct: number[] = [];
const commit: number[] = [];
try {
  for (let r = 0; r < rounds; r++) {
    base.push(await baseline());
    const [send, done] = await presigned(r);
    direct.push(send);
    commit.push(done);
  }
} finally {
  await http.close();
  await server.close();
  s3.destroy();
  await rm(dir, { recursive: true, force: true });
}
const best = (xs: number[]) => Math.min(...xs);
const mibs = (s: number) => Math.round((sizeMiB / s) * 10) / 10;
const r1 = (x: number) => Math.round(x * 100) / 100;
console.log(JSON.stringify({
  bench: "s3-artifact", sizeMiB, rounds, partSizeMiB: partSizeBytes / MiB, concurrency, store: "swift-s3api (scripts/services/s3.sh)",
  libStorageMiBps: mibs(best(base)), presignedMultipartMiBps: mibs(best(direct)), ratio: r1(best(base) / best(direct)),
  presignedWithCommitMiBps: mibs(best(direct.map((d, i) => d + (commit[i] ?? 0)))), commitSeconds: commit.map(r1),
  libStorageSeconds: base.map(r1), presignedSeconds: direct.map(r1), goal: "ratio >= 0.9",
  loadavgBefore: loadBefore.map(r1), loadavgAfter: loadavg().map(r1),
}));
