/**
 * Job logs as files, one per attempt (`<dir>/<jobId>.<attempt>.log`), written at explicit offsets.
 * The attempt's `log_bytes` in SQLite stays the truth: bytes past it (an append whose batch rolled
 * back, or a crash between the write and the commit) are never read and the next append at that
 * offset overwrites them. With `sync`, every file written in a batch is fdatasync'ed once before
 * the batch's SQLite commit (group fsync: acknowledged bytes survive power loss); without it the
 * page cache holds them, which survives a SIGKILL of the server as SQLite's NORMAL mode does.
 * Logs left in the `log_chunks` table by older servers are still read (and appended to) there.
 */
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, mkdirSync, openSync, readSync, rmSync, writev, writevSync, constants } from "node:fs";
import { join } from "node:path";

/** Open log files kept at most; the least recently used one is closed first. */
const MAX_OPEN = 64;
const SAFE_ID = /^[A-Za-z0-9_-]{1,128}$/;

export class LogFiles {
  private readonly dir: string;
  private readonly sync: boolean;
  /** Open descriptors by `jobId.attempt`, least recently used first. */
  private readonly fds = new Map<string, number>();
  private readonly dirty = new Set<string>();
  /** Keys with a stage in flight (count): their descriptor stays open until it ends. */
  private readonly pinned = new Map<string, number>();
  private dirDirty = false;

  constructor(dir: string, sync: boolean) {
    this.dir = dir;
    this.sync = sync;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** Writes `parts`, one after another, at `start` (synchronously: the caller is inside a write batch). */
  write(jobId: string, attempt: number, start: number, parts: readonly Uint8Array[]): void {
    const key = keyOf(jobId, attempt);
    const fd = this.open(key, true);
    if (fd === null) throw new Error(`log file ${key} cannot be opened`);
    // One writev for the parts a body arrived in (a short write continues with what is left).
    let pending: Uint8Array[] = parts.filter((p) => p.length > 0);
    let at = start;
    while (pending.length > 0) {
      const n = writevSync(fd, pending, at);
      at += n;
      pending = unwritten(pending, n);
    }
    if (this.sync) this.dirty.add(key);
  }

  /**
   * Writes `parts` at `start` of an existing log file off the event loop (the thread pool), and
   * with `sync` fdatasyncs them. Its descriptor is pinned meanwhile: not evicted, and a `remove`
   * closes it only once the stage is over. False when the file does not exist. The caller
   * commits the range afterwards.
   */
  async stage(jobId: string, attempt: number, start: number, parts: readonly Uint8Array[]): Promise<boolean> {
    const key = keyOf(jobId, attempt);
    const fd = this.open(key, false);
    if (fd === null) return false;
    this.pinned.set(key, (this.pinned.get(key) ?? 0) + 1);
    try {
      let pending = parts.filter((p) => p.length > 0);
      let at = start;
      while (pending.length > 0) {
        const n = await new Promise<number>((resolve, reject) => writev(fd, pending, at, (err, written) => (err ? reject(err) : resolve(written))));
        at += n;
        pending = unwritten(pending, n);
      }
      if (this.sync) await new Promise<void>((resolve, reject) => fdatasync(fd, (err) => (err ? reject(err) : resolve())));
      return true;
    } finally {
      const left = (this.pinned.get(key) ?? 1) - 1;
      if (left > 0) this.pinned.set(key, left);
      else {
        this.pinned.delete(key);
        // Removed (or evicted past the limit) while staging: close it now.
        if (this.fds.get(key) !== fd) closeSync(fd);
      }
    }
  }

  /** Reads up to `len` bytes at `position`; null when the attempt has no log file. */
  read(jobId: string, attempt: number, position: number, len: number): Buffer | null {
    const fd = this.open(keyOf(jobId, attempt), false);
    if (fd === null) return null;
    const buf = Buffer.allocUnsafe(len);
    let n = 0;
    while (n < len) {
      const r = readSync(fd, buf, n, len - n, position + n);
      if (r <= 0) break;
      n += r;
    }
    return buf.subarray(0, n);
  }

  exists(jobId: string, attempt: number): boolean {
    return this.open(keyOf(jobId, attempt), false) !== null;
  }

  /** Deletes an attempt's log file (a retention delete, after its commit). */
  remove(jobId: string, attempt: number): void {
    const key = keyOf(jobId, attempt);
    const fd = this.fds.get(key);
    if (fd !== undefined) {
      this.fds.delete(key);
      this.dirty.delete(key);
      if (!this.pinned.has(key)) closeSync(fd);
    }
    rmSync(join(this.dir, `${key}.log`), { force: true });
  }

  /** Group fsync: called once per batch, before its SQLite commit. Throws when a sync fails. */
  syncWritten(): void {
    for (const key of this.dirty) {
      const fd = this.fds.get(key);
      if (fd !== undefined) fdatasyncSync(fd);
    }
    this.dirty.clear();
    if (this.dirDirty) {
      const d = openSync(this.dir, constants.O_RDONLY | constants.O_DIRECTORY);
      try {
        fsyncSync(d);
      } finally {
        closeSync(d);
      }
      this.dirDirty = false;
    }
  }

  close(): void {
    for (const [key, fd] of this.fds) if (!this.pinned.has(key)) closeSync(fd);
    this.fds.clear();
  }

  private open(key: string, create: boolean): number | null {
    const cached = this.fds.get(key);
    if (cached !== undefined) {
      this.fds.delete(key);
      this.fds.set(key, cached);
      return cached;
    }
    let fd: number;
    try {
      fd = openSync(join(this.dir, `${key}.log`), create ? constants.O_RDWR | constants.O_CREAT : constants.O_RDWR, 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT" && !create) return null;
      throw err;
    }
    if (create && this.sync) this.dirDirty = true;
    this.fds.set(key, fd);
    if (this.fds.size > MAX_OPEN) this.evictOldest();
    return fd;
  }

  private evictOldest(): void {
    let oldest: [string, number] | undefined;
    for (const entry of this.fds) {
      if (this.pinned.has(entry[0])) continue;
      oldest = entry;
      break;
    }
    if (oldest === undefined) return; // all pinned: a few more stay open until their stages end
    const [key, fd] = oldest;
    // Not yet synced for its batch: sync now, or the commit would acknowledge unsynced bytes.
    if (this.dirty.has(key)) {
      fdatasyncSync(fd); // throws (EIO) with the key still dirty: the batch fails, nothing is acknowledged unsynced
      this.dirty.delete(key);
    }
    this.fds.delete(key);
    closeSync(fd);
  }
}

/** What is left of `parts` after a (possibly short) writev of `n` bytes. */
function unwritten(parts: readonly Uint8Array[], n: number): Uint8Array[] {
  const rest: Uint8Array[] = [];
  let left = n;
  for (const p of parts) {
    if (left >= p.length) left -= p.length;
    else {
      rest.push(left > 0 ? p.subarray(left) : p);
      left = 0;
    }
  }
  return rest;
}

function keyOf(jobId: string, attempt: number): string {
  if (!SAFE_ID.test(jobId) || !Number.isSafeInteger(attempt) || attempt < 0) throw new Error(`bad log key ${jobId}/${attempt}`);
  return `${jobId}.${attempt}`;
}
