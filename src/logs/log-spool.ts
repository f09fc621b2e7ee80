/**
 * The on-disk spool of a job's (already masked) log: an append-only file in the runner's work
 * dir. Writers append synchronously (ordering is the file's order); the uploader reads ranges
 * back, so a flood of output costs disk, not memory. Appends past `limitBytes` are cut and
 * `truncated` is set: the job then ends with failure `log_limit`.
 *
 * Appends (a step's pipe gives 64 KiB at a time) are gathered in one block buffer and written
 * to the file a block at a time; reads of bytes not yet written are served from that buffer.
 * The last SPOOL_RECENT_BLOCKS written blocks stay in memory too: the uploader reads just
 * behind the writer, so its reads are a copy in memory, not a read of the file back.
 * The block starts small and grows to its full size only when a job prints that much.
 */
import { closeSync, openSync, read, readSync, writeSync } from "node:fs";

/** Appends gathered before one write to the file. */
export const SPOOL_BLOCK_BYTES = 1024 * 1024;
/** Written blocks kept in memory for the uploader's reads (it reads a chunk of ≤ 4 MiB just behind the writer). */
export const SPOOL_RECENT_BLOCKS = 4;

/**
 * The block's first size. Most jobs print a few KiB; a full block per job is external memory
 * V8 counts towards a full GC (a runner host runs many jobs).
 */
export const SPOOL_FIRST_BLOCK_BYTES = 64 * 1024;

export class LogSpool {
  readonly path: string;
  readonly limitBytes: number;
  private fd: number | null;
  private sizeBytes = 0;
  /** Bytes in the file; the rest (`sizeBytes - fileBytes`) wait in `block`. */
  private fileBytes = 0;
  private block: Buffer | null = null;
  /** The last blocks written, oldest first: together they hold the file's bytes [fileBytes − their size, fileBytes). */
  private readonly recent: Buffer[] = [];
  private last = -1;
  private truncatedFlag = false;
  private readonly listeners = new Set<() => void>();

  constructor(path: string, limitBytes: number) {
    this.path = path;
    this.limitBytes = limitBytes;
    this.fd = openSync(path, "w+", 0o600);
  }

  get size(): number {
    return this.sizeBytes;
  }

  get truncated(): boolean {
    return this.truncatedFlag;
  }

  /** Last byte appended, or -1 when empty. */
  get lastByte(): number {
    return this.last;
  }

  /** Called after every append that added bytes, and when the spool is closed. */
  onAppend(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Appends what fits under the limit; returns the number of bytes written. */
  append(data: Uint8Array): number {
    if (this.fd === null || data.length === 0) return 0;
    const room = this.limitBytes - this.sizeBytes;
    const n = Math.min(room, data.length);
    if (n < data.length) this.truncatedFlag = true;
    let off = 0;
    while (off < n) {
      const held = this.sizeBytes - this.fileBytes;
      if (held === 0 && n - off >= SPOOL_BLOCK_BYTES) {
        // A whole block or more and nothing held: straight to the file, no copy (and not kept).
        off += this.writeFile(data.subarray(off, n));
        this.recent.length = 0;
        continue;
      }
      const take = Math.min(SPOOL_BLOCK_BYTES - held, n - off);
      this.blockFor(held, held + take).set(data.subarray(off, off + take), held);
      this.sizeBytes += take;
      off += take;
      if (this.sizeBytes - this.fileBytes === SPOOL_BLOCK_BYTES) this.flushBlock();
    }
    if (n > 0) {
      this.last = data[n - 1] ?? -1;
      for (const l of this.listeners) l();
    }
    return n;
  }

  /** The block, made or grown (keeping its `held` bytes) to hold at least `need` bytes. */
  private blockFor(held: number, need: number): Buffer {
    if (this.block !== null && this.block.length >= need) return this.block;
    const grown = Buffer.allocUnsafe(need <= SPOOL_FIRST_BLOCK_BYTES ? SPOOL_FIRST_BLOCK_BYTES : SPOOL_BLOCK_BYTES);
    if (this.block !== null && held > 0) this.block.copy(grown, 0, 0, held);
    this.block = grown;
    return grown;
  }

  /** Reads up to `buf.length` bytes at `position`; returns the count. */
  readAt(position: number, buf: Buffer): Promise<number> {
    const fd = this.fd;
    if (fd === null) return Promise.reject(new Error("spool closed"));
    const len = Math.min(buf.length, this.sizeBytes - position);
    if (len <= 0) return Promise.resolve(0);
    // Copied now when in memory (blocks are reused); the file part is immutable.
    const fromFile = Math.max(0, Math.min(len, this.fileBytes - position));
    this.copyHeld(position + fromFile, buf.subarray(fromFile, len));
    if (fromFile === 0) return Promise.resolve(len);
    if (this.copyRecent(position, buf.subarray(0, fromFile))) return Promise.resolve(len);
    return new Promise((resolve, reject) => read(fd, buf, 0, fromFile, position, (err, n) => (err ? reject(err) : resolve(n < fromFile ? n : len))));
  }

  readAtSync(position: number, buf: Buffer): number {
    if (this.fd === null) throw new Error("spool closed");
    const len = Math.min(buf.length, this.sizeBytes - position);
    if (len <= 0) return 0;
    const fromFile = Math.max(0, Math.min(len, this.fileBytes - position));
    this.copyHeld(position + fromFile, buf.subarray(fromFile, len));
    if (fromFile === 0 || this.copyRecent(position, buf.subarray(0, fromFile))) return len;
    const n = readSync(this.fd, buf, 0, fromFile, position);
    return n < fromFile ? n : len;
  }

  /** Writes what the block holds, then closes the file. */
  close(): void {
    if (this.fd === null) return;
    try {
      this.flushBlock();
    } finally {
      closeSync(this.fd);
      this.fd = null;
    }
  }

  /** Copies held (not yet written) bytes from `position` into `into` (all of it lies in the block). */
  private copyHeld(position: number, into: Buffer): void {
    if (into.length === 0 || this.block === null) return;
    const at = position - this.fileBytes;
    this.block.copy(into, 0, at, at + into.length);
  }

  /** Copies file bytes from `position` into `into` if the recent blocks hold all of them. */
  private copyRecent(position: number, into: Buffer): boolean {
    let at = this.fileBytes;
    for (const b of this.recent) at -= b.length;
    if (position < at) return false;
    let done = 0;
    for (const b of this.recent) {
      if (done === into.length) break;
      if (position + done < at + b.length) done += b.copy(into, done, position + done - at, Math.min(b.length, position + into.length - at));
      at += b.length;
    }
    return true;
  }

  private flushBlock(): void {
    const held = this.sizeBytes - this.fileBytes;
    const block = this.block;
    if (held === 0 || block === null) return;
    this.writeFile(block.subarray(0, held), false);
    if (held < SPOOL_BLOCK_BYTES) {
      // A partial block (close) is not kept: the block is filled again from its start.
      this.recent.length = 0;
      return;
    }
    // Keep it for reads; the block that drops out of the window is filled next (no allocation).
    this.recent.push(block);
    this.block = this.recent.length > SPOOL_RECENT_BLOCKS ? (this.recent.shift() ?? null) : null;
  }

  /** Writes `data` at the file's end; returns its length. `grow`: it was not yet counted in the size. */
  private writeFile(data: Uint8Array, grow = true): number {
    const fd = this.fd;
    if (fd === null) return data.length;
    let off = 0;
    while (off < data.length) off += writeSync(fd, data, off, data.length - off, this.fileBytes + off);
    this.fileBytes += data.length;
    if (grow) this.sizeBytes += data.length;
    return data.length;
  }
}
