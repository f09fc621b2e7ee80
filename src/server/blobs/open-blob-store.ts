/**
 * The blob store a server's options name (the one place that picks an implementation). The S3
 * store, and the AWS SDK with it, is imported only when asked for: every other `deltaci` start
 * (runners are spawned per job) skips evaluating it.
 */
import { defaults } from "../../config/defaults.ts";
import type { BlobStoreOptions, Durability } from "../options.ts";
import type { BlobStore } from "./blob-store.ts";
import { FsBlobStore } from "./cas.ts";

export async function openBlobStore(o: BlobStoreOptions, dataDir: string, durability: Durability = "full"): Promise<BlobStore> {
  if (o.kind === "fs") return new FsBlobStore(dataDir, { fsync: durability !== "none" });
  const { S3BlobStore } = await import("./s3-blob-store.ts");
  return new S3BlobStore({
    ...o,
    partSizeBytes: o.partSizeBytes ?? defaults.s3PartSizeBytes,
    multipartThresholdBytes: o.multipartThresholdBytes ?? defaults.s3MultipartThresholdBytes,
    presignExpiryMs: o.presignExpiryMs ?? defaults.s3PresignExpiryMs,
  });
}
