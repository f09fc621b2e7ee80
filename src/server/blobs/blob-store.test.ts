/** Runs the BlobStore conformance suite against the filesystem store and a real S3 server (env from scripts/test-services.sh). */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { testS3Env } from "../../config/server-config.ts";
import { blobStoreConformance } from "./blob-store.conformance.ts";
import { FsBlobStore } from "./cas.ts";
import { S3BlobStore } from "./s3-blob-store.ts";

const MiB = 1024 * 1024;

blobStoreConformance("filesystem", async () => {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-blobs-"));
  return { store: new FsBlobStore(dir), partSizeBytes: 0, dispose: () => rm(dir, { recursive: true, force: true }) };
});

// `deltaci run`'s throwaway server (durability "none"): the same store, without its fsyncs.
blobStoreConformance("filesystem, no fsync", async () => {
  const dir = await mkdtemp(join(tmpdir(), "deltaci-blobs-"));
  return { store: new FsBlobStore(dir, { fsync: false }), partSizeBytes: 0, dispose: () => rm(dir, { recursive: true, force: true }) };
});

blobStoreConformance("s3", async () => {
  const env = testS3Env();
  // A fresh prefix per run: runs share the service's bucket. 5 MiB parts (S3's minimum) keep the data small.
  const store = new S3BlobStore({
    bucket: env.bucket, prefix: `conformance-${randomBytes(6).toString("hex")}/`, endpoint: env.endpoint, region: env.region,
    forcePathStyle: true, credentials: env.credentials, partSizeBytes: 5 * MiB, multipartThresholdBytes: 5 * MiB, presignExpiryMs: 600_000,
  });
  return { store, partSizeBytes: 5 * MiB, dispose: () => store.close() };
});
