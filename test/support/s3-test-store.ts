/** An S3 blob store on the test services' bucket (env from scripts/test-services.sh), under a fresh prefix: runs share the bucket. */
import { randomBytes } from "node:crypto";
import { testS3Env } from "../../src/config/server-config.ts";
import type { BlobStoreOptions } from "../../src/server/index.ts";

export function s3TestStore(tag: string): BlobStoreOptions {
  const env = testS3Env();
  return {
    kind: "s3", bucket: env.bucket, prefix: `${tag}-${randomBytes(6).toString("hex")}/`, endpoint: env.endpoint, region: env.region,
    forcePathStyle: true, credentials: env.credentials,
  };
}
