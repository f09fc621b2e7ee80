/**
 * The default blob store, on disk: `<root>/cas/sha256/ab/abcdef…`. Writes go to a temp file
 * under the data dir, are verified (size, sha256), fsynced and renamed into place atomically, so a
 * blob path exists only for complete, verified bytes. Blobs are immutable and deduplicated.
 * Paths are built only from validated hex digests and server-made ids, never from names.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream, existsSync } from "node:fs";
import { mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { DeltaError } from "../../base/errors.ts";
import {
  checkRange, checkSha256, checkUploadId, digestMismatch, SHA256_HEX, type BlobInfo, type BlobStore, type DirectUpload, type StagedUpload, type StoredBlob,
} from "./blob-store.ts";

export class FsBlobStore implements BlobStore {
  readonly kind = "fs";
  private readonly casDir: string;
  private readonly tmpDir: string;
  private readonly uploadDir: string;
  /** False for a throwaway store (`durability: "none"`): nothing is fsynced. */
  private readonly fsync: boolean;

  constructor(dataDir: string, opts: { fsync?: boolean } = {}) {
    this.fsync = opts.fsync ?? true;
    this.casDir = join(dataDir, "cas", "sha256");
    this.tmpDir = join(dataDir, "tmp");
    this.uploadDir = join(dataDir, "uploads");
  }

  async init(): Promise<void> {
    // Owner-only: the data dir itself may be traversable by others (`deltaci up` keeps the runners' work root in it).
    await Promise.all([mkdir(this.casDir, { recursive: true, mode: 0o700 }), mkdir(this.uploadDir, { recursive: true, mode: 0o700 })]);
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
  }

  async close(): Promise<void> {}

  private path(sha256: string): string {
    return join(this.casDir, checkSha256(sha256).slice(0, 2), sha256);
  }

  async has(sha256: string, size?: number): Promise<boolean> {
    if (!SHA256_HEX.test(sha256)) return false;
    try {
      const st = await stat(this.path(sha256));
      return size === undefined || st.size === size;
    } catch {
      return false;
    }
  }

  async open(sha256: string): Promise<Readable> {
    const file = this.path(sha256);
    const fh = await open(file, "r").catch((err: unknown) => {
      throw new DeltaError("E_NOT_FOUND", `no blob ${sha256}`, { cause: err });
    });
    return fh.createReadStream();
  }

  async openRange(sha256: string, start: number, end: number): Promise<Readable> {
    checkRange(start, end);
    const fh = await open(this.path(sha256), "r").catch((err: unknown) => {
      throw new DeltaError("E_NOT_FOUND", `no blob ${sha256}`, { cause: err });
    });
    return fh.createReadStream({ start, end });
  }

  /** Uploads come through the server (appendUpload). */
  async directUpload(): Promise<DirectUpload | null> {
    return null;
  }

  /** Streams `body` into the store (at most `maxBytes`); verifies `expect` when given. */
  async put(body: Readable, maxBytes: number, expect?: BlobInfo): Promise<BlobInfo> {
    const tmp = join(this.tmpDir, `put-${randomBytes(8).toString("hex")}`);
    try {
      const { size, sha256 } = await writeCapped(body, tmp, maxBytes, "w", this.fsync);
      if (expect && (expect.size !== size || expect.sha256 !== sha256)) throw digestMismatch({ size, sha256 }, expect);
      await this.adopt(tmp, sha256);
      return { sha256, size };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Moves a complete, verified file into place (dedup: an existing blob wins). */
  private async adopt(file: string, sha256: string): Promise<void> {
    const dest = this.path(sha256);
    if (existsSync(dest)) return;
    const dir = join(this.casDir, sha256.slice(0, 2));
    await mkdir(dir, { recursive: true });
    await rename(file, dest);
    if (this.fsync) await fsyncDir(dir);
  }

  // ---- resumable uploads (artifacts) ----

  private partPath(uploadId: string): string {
    return join(this.uploadDir, `${checkUploadId(uploadId)}.part`);
  }

  /** Bytes of an upload the store holds (fsynced before each acknowledgement). */
  async uploadOffset(uploadId: string): Promise<number> {
    try {
      return (await stat(this.partPath(uploadId))).size;
    } catch {
      return 0;
    }
  }

  /** Appends `body` at `start` (must equal the current offset); returns the new offset. */
  async appendUpload(uploadId: string, start: number, body: Readable, maxBytes: number): Promise<number> {
    const have = await this.uploadOffset(uploadId);
    if (start !== have) {
      body.resume();
      throw new DeltaError("E_RANGE", `upload holds ${have} bytes; send from there`, { details: { committed: have } });
    }
    const { size } = await writeCapped(body, this.partPath(uploadId), maxBytes, "a", this.fsync);
    return have + size;
  }

  /** Verifies a finished upload; moves it into the store, or deletes it and throws E_DIGEST_MISMATCH. */
  async finishUpload(uploadId: string, expect: BlobInfo): Promise<void> {
    const part = this.partPath(uploadId);
    const got = await hashFile(part);
    if (got.size !== expect.size || got.sha256 !== expect.sha256) {
      await rm(part, { force: true });
      throw digestMismatch(got, expect);
    }
    await this.adopt(part, expect.sha256);
    await rm(part, { force: true });
  }

  async discardUpload(uploadId: string): Promise<void> {
    await rm(this.partPath(uploadId), { force: true });
  }

  // ---- garbage collection ----

  async *listBlobs(): AsyncIterable<StoredBlob> {
    for (const dir of await readdir(this.casDir).catch(() => [] as string[])) {
      if (!/^[a-f0-9]{2}$/.test(dir)) continue;
      for (const name of await readdir(join(this.casDir, dir)).catch(() => [] as string[])) {
        if (!SHA256_HEX.test(name)) continue;
        const st = await stat(join(this.casDir, dir, name)).catch(() => null);
        if (st) yield { sha256: name, size: st.size, modifiedAt: st.mtimeMs };
      }
    }
  }

  async deleteBlob(sha256: string): Promise<void> {
    await rm(this.path(sha256), { force: true });
  }

  async *listUploads(): AsyncIterable<StagedUpload> {
    for (const name of await readdir(this.uploadDir).catch(() => [] as string[])) {
      if (!name.endsWith(".part")) continue;
      const st = await stat(join(this.uploadDir, name)).catch(() => null);
      if (st) yield { uploadId: name.slice(0, -".part".length), size: st.size, modifiedAt: st.mtimeMs };
    }
  }
}

async function writeCapped(body: Readable, file: string, maxBytes: number, flags: "w" | "a", fsync: boolean): Promise<BlobInfo> {
  const h = createHash("sha256");
  let size = 0;
  const out = createWriteStream(file, { flags });
  const opened = new Promise<void>((res, rej) => {
    out.once("open", () => res());
    out.once("error", rej);
  });
  await opened;
  try {
    for await (const chunk of body) {
      const buf = chunk as Buffer;
      size += buf.length;
      if (size > maxBytes) throw new DeltaError("E_TOO_LARGE", `body exceeds ${maxBytes} bytes`);
      h.update(buf);
      if (!out.write(buf)) await new Promise<void>((res) => out.once("drain", () => res()));
    }
  } finally {
    await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
    if (fsync) {
      const fh = await open(file, "r+");
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
    }
  }
  return { size, sha256: h.digest("hex") };
}

async function hashFile(file: string): Promise<BlobInfo> {
  const h = createHash("sha256");
  let size = 0;
  try {
    for await (const chunk of createReadStream(file)) {
      h.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch {
    return { size: 0, sha256: createHash("sha256").digest("hex") };
  }
  return { size, sha256: h.digest("hex") };
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
