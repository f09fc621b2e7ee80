/**
 * The `::add-mask::VALUE` workflow command (GitHub's): a line of step output starting with it
 * adds VALUE to the job's masks from that point on, and the line itself is passed on as
 * `::add-mask::***` (the value never reaches the log). Ordinary output is never held: only a
 * line that starts like the command is held, until its newline. A value over MAX_MASK_BYTES
 * (a masker's prefix table grows with the square of a pattern's length) is not masked: its
 * line is dropped whole and says so, so nothing of it is stored either way.
 */
import { indexOfByRareByte } from "./find-bytes.ts";

const COMMAND = Buffer.from("::add-mask::");
const NL_COMMAND = Buffer.from("\n::add-mask::");
const MASKED_LINE = Buffer.from("::add-mask::***\n");
export const MAX_MASK_BYTES = 1024;
const TOO_LONG_LINE = Buffer.from(`::add-mask::*** (ignored: the value is over ${MAX_MASK_BYTES} bytes, so it is not masked)\n`);
const MAX_COMMAND_BYTES = COMMAND.length + MAX_MASK_BYTES + 1;

export interface AddMaskSink {
  /**
   * Bytes to pass on (to the stream's masker), in order. They may be a view of the chunk being
   * written: use (or copy) them before returning, as the masker and the spool do.
   */
  emit(bytes: Buffer): void;
  /** A value to mask from now on; called before any byte after its command line is emitted. */
  mask(value: string): void;
}

export class AddMaskFilter {
  private atLineStart = true;
  /** A line that starts (or may start) with the command, not yet complete. */
  private held: Buffer | null = null;
  private discarding = false;

  constructor(private readonly sink: AddMaskSink) {}

  write(chunk: Uint8Array): void {
    const incoming = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const data = this.held ? Buffer.concat([this.held, incoming]) : incoming;
    this.held = null;
    let pos = 0;
    while (pos < data.length) {
      if (this.discarding) {
        const nl = data.indexOf(0x0a, pos);
        if (nl === -1) return;
        this.discarding = false;
        this.atLineStart = true;
        pos = nl + 1;
        continue;
      }
      if (!this.atLineStart) {
        // Up to the next line that starts with the command, or else to the last line start (whose
        // line may be the command's first bytes): many lines in one emit, not one emit per line.
        const cmd = indexOfByRareByte(data, NL_COMMAND, NL_COMMAND.indexOf("k"), pos);
        const last = cmd === -1 ? data.lastIndexOf(0x0a) : cmd;
        const end = last < pos ? data.length : last + 1;
        this.sink.emit(data.subarray(pos, end));
        this.atLineStart = end !== data.length || data[end - 1] === 0x0a;
        pos = end;
        continue;
      }
      const n = Math.min(COMMAND.length, data.length - pos);
      if (data.compare(COMMAND, 0, n, pos, pos + n) !== 0) {
        this.atLineStart = false;
        continue;
      }
      const nl = n < COMMAND.length ? -1 : data.indexOf(0x0a, pos + COMMAND.length);
      if (nl === -1 ? data.length - pos > MAX_COMMAND_BYTES : nl - pos > MAX_COMMAND_BYTES) {
        this.sink.emit(TOO_LONG_LINE);
        this.discarding = true;
        continue;
      }
      if (nl === -1) {
        this.held = Buffer.from(data.subarray(pos));
        return;
      }
      this.command(data.subarray(pos + COMMAND.length, nl));
      pos = nl + 1;
    }
  }

  /** End of the stream: a command without its newline still counts; a partial prefix is output. */
  end(): void {
    const held = this.held;
    this.held = null;
    if (!held) return;
    if (held.length >= COMMAND.length) this.command(held.subarray(COMMAND.length));
    else this.sink.emit(held);
  }

  private command(raw: Buffer): void {
    const value = raw.toString("utf8").replace(/\r$/, "");
    if (Buffer.byteLength(value) > MAX_MASK_BYTES) this.sink.emit(TOO_LONG_LINE);
    else {
      if (value.length > 0) this.sink.mask(value);
      this.sink.emit(MASKED_LINE);
    }
    this.atLineStart = true;
  }
}
