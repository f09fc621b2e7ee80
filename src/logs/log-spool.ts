/**
 * The on-disk spool of a job's (already masked) log: an append-only file in the runner's work
 * dir. Writers append synchronously (ordering is the file's order); the uploader reads ranges
 * back, so a flood of output costs disk, not memory. Appends past `limitBytes` are cut and
 * `truncated` is set: the job then ends with failure `log_limit`.
 */
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { read } from "node:fs";

export class LogSpool {
  readonly path: string;
  readonly limitBytes: number;
  private fd: number | null;
  private sizeBytes = 0;
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
    while (off < n) off += writeSync(this.fd, data, off, n - off, this.sizeBytes + off);
    this.sizeBytes += n;
    if (n > 0) {
      this.last = data[n - 1] ?? -1;
      for (const l of this.listeners) l();
    }
    return n;
  }

  /** Reads up to `buf.length` bytes at `position`; returns the count. */
  readAt(position: number, buf: Buffer): Promise<number> {
    const fd = this.fd;
    if (fd === null) return Promise.reject(new Error("spool closed"));
    const len = Math.min(buf.length, this.sizeBytes - position);
    if (len <= 0) return Promise.resolve(0);
    return new Promise((resolve, reject) => read(fd, buf, 0, len, position, (err, n) => (err ? reject(err) : resolve(n))));
  }

  readAtSync(position: number, buf: Buffer): number {
    if (this.fd === null) throw new Error("spool closed");
    const len = Math.min(buf.length, this.sizeBytes - position);
    return len <= 0 ? 0 : readSync(this.fd, buf, 0, len, position);
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}
