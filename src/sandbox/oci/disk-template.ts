/**
 * Pristine job disks. A job disk of a given size is formatted once per machine: `mkfs.ext4` of a
 * sparse image, whose non-zero blocks (about 0.6 MiB for 1 GiB) are kept as a *pack* in the cache
 * dir. Each job gets a new sparse image file written from the pack: the bytes of a freshly
 * formatted file system and holes elsewhere, so nothing of an earlier job (files, sparse data,
 * xattrs, freed blocks) can be in it, and no mkfs runs on a job's path. The previous job's image
 * file is unlinked with its job dir. (Measured alternatives: docs/sandbox.md, "Job disks".)
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, existsSync, ftruncateSync, openSync, writeSync } from "node:fs";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { DeltaError } from "../../base/errors.ts";

const run = promisify(execFile);

/**
 * No journal (a job disk never outlives a crash), no reserved blocks, inode tables left to read as
 * holes, no resize inode (a job disk is never grown; its reserved GDT blocks were 2.1 of the 2.2 MB
 * written per 4 GiB job disk).
 */
export const MKFS_ARGS = ["-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard"];
const BLOCK = 4096;

interface Pack {
  sizeBytes: number;
  /** [offset, length] of each run of non-zero blocks, in file order; their bytes follow in `data`. */
  extents: Array<[number, number]>;
  data: Buffer;
}

/** The runs of non-zero 4 KiB blocks of `buf`, read from file offset `base`. */
function nonZeroRuns(buf: Buffer, base: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let at = 0; at < buf.length; at += BLOCK) {
    const block = buf.subarray(at, Math.min(buf.length, at + BLOCK));
    if (block.every((b) => b === 0)) continue;
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === base + at) last[1] += block.length;
    else runs.push([base + at, block.length]);
  }
  return runs;
}

export class DiskTemplates {
  /** One pack per size, loaded once per factory (a 1 GiB disk's pack is about 0.6 MiB). */
  private readonly packs = new Map<number, Promise<Pack>>();

  constructor(
    /** Where packs are kept: `<cacheDir>/disk-templates`. */
    private readonly dir: string,
    /** The disk tool (`extents`), built on first use. */
    private readonly diskTool: () => Promise<string>,
  ) {}

  /**
   * Writes a new sparse image of `sizeMiB` holding a pristine ext4 file system; `path` must not
   * exist. Synchronously: a dozen writes of ~0.1 MB in all into the page cache take well under a
   * millisecond, while as many thread-pool round trips each wait for a turn of a busy event
   * loop (`deltaci run` builds its first sandbox while its server starts).
   */
  async writeImage(path: string, sizeMiB: number): Promise<void> {
    const pack = await this.pack(sizeMiB);
    const fd = openSync(path, "wx", 0o600);
    try {
      ftruncateSync(fd, pack.sizeBytes);
      let at = 0;
      for (const [offset, length] of pack.extents) {
        writeSync(fd, pack.data, at, length, offset);
        at += length;
      }
    } finally {
      closeSync(fd);
    }
  }

  private pack(sizeMiB: number): Promise<Pack> {
    let p = this.packs.get(sizeMiB);
    if (!p) {
      p = this.loadOrMake(sizeMiB).catch((e: unknown) => {
        this.packs.delete(sizeMiB);
        throw new DeltaError("E_SANDBOX", `cannot make the ${sizeMiB} MiB job disk template: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
      });
      this.packs.set(sizeMiB, p);
    }
    return p;
  }

  private async loadOrMake(sizeMiB: number): Promise<Pack> {
    const key = createHash("sha256").update(JSON.stringify([sizeMiB, MKFS_ARGS])).digest("hex").slice(0, 16);
    const file = join(this.dir, `ext4-${sizeMiB}m-${key}.pack`);
    if (!existsSync(file)) await this.make(sizeMiB, file);
    const raw = await readFile(file);
    const headerLength = raw.readUInt32BE(0);
    const header = JSON.parse(raw.subarray(4, 4 + headerLength).toString("utf8")) as Omit<Pack, "data">;
    const data = raw.subarray(4 + headerLength);
    if (header.sizeBytes !== sizeMiB * 1024 * 1024 || header.extents.reduce((n, [, len]) => n + len, 0) !== data.length) {
      throw new Error(`${file} is damaged: remove it to have it made again`);
    }
    return { ...header, data };
  }

  /** mkfs once, keep the non-zero blocks; written to a temp name and renamed (concurrent makers never see half a pack). */
  private async make(sizeMiB: number, file: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
    const image = `${tmp}.img`;
    try {
      const fh = await open(image, "wx", 0o600);
      await fh.truncate(sizeMiB * 1024 * 1024).finally(() => fh.close());
      await run("mkfs.ext4", [...MKFS_ARGS, image], { timeout: 120_000 });
      const { stdout } = await run(await this.diskTool(), ["extents", image]);
      const extents: Array<[number, number]> = [];
      const chunks: Buffer[] = [];
      const img = await open(image, "r");
      try {
        for (const line of stdout.split("\n").filter((l) => l !== "")) {
          const [offset, length] = line.split(" ").map(Number) as [number, number];
          const buf = Buffer.alloc(length);
          await img.read(buf, 0, length, offset);
          for (const [o, l] of nonZeroRuns(buf, offset)) {
            extents.push([o, l]);
            chunks.push(buf.subarray(o - offset, o - offset + l));
          }
        }
      } finally {
        await img.close();
      }
      const header = Buffer.from(JSON.stringify({ sizeBytes: sizeMiB * 1024 * 1024, extents }), "utf8");
      const length = Buffer.alloc(4);
      length.writeUInt32BE(header.length);
      await writeFile(tmp, Buffer.concat([length, header, ...chunks]), { mode: 0o600 });
      await rename(tmp, file);
    } finally {
      await rm(image, { force: true });
      await rm(tmp, { force: true });
    }
  }
}
