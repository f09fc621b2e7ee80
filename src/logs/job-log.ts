/**
 * A job's log as the runner writes it: step output goes through a per-stream SecretMasker into
 * the spool; marker lines (step boundaries, notices) are masked whole and always start a line.
 * Nothing unmasked reaches the spool. Environments are never written here.
 */
import { randomBytes } from "node:crypto";
import type { LogSpool } from "./log-spool.ts";
import { AddMaskFilter } from "./add-mask.ts";
import { SecretMasker } from "./secret-masker.ts";
import { formatMarker, LOG_FORMAT_VERSION, type MarkerKind } from "./step-markers.ts";

export interface StreamWriter {
  write(chunk: Uint8Array): void;
  /** Releases the masker's held-back tail. */
  end(): void;
}

export class JobLog {
  readonly nonce: string;
  private readonly spool: LogSpool;
  private readonly secrets: string[];
  private readonly markerMasker: SecretMasker;
  /** Tail flushers of the streams still open. */
  private readonly open = new Set<() => void>();
  /** Maskers of the open streams (a value added at run time reaches them all). */
  private readonly maskers = new Set<SecretMasker>();

  constructor(spool: LogSpool, secretValues: Iterable<string>, nonce: string = randomBytes(8).toString("hex")) {
    this.spool = spool;
    this.secrets = [...secretValues];
    this.markerMasker = new SecretMasker(this.secrets);
    this.nonce = nonce;
  }

  get bytes(): number {
    return this.spool.size;
  }

  get truncated(): boolean {
    return this.spool.truncated;
  }

  start(data: Record<string, unknown>): void {
    this.marker("log-start", { version: LOG_FORMAT_VERSION, ...data });
  }

  /**
   * A writer for one output stream of a step (stdout or stderr), with its own masker. An
   * `::add-mask::VALUE` line (add-mask.ts) masks VALUE in every stream and marker from then on.
   */
  stream(): StreamWriter {
    const masker = new SecretMasker(this.secrets);
    this.maskers.add(masker);
    const commands = new AddMaskFilter({
      emit: (bytes) => this.spool.append(masker.write(bytes)),
      mask: (value) => this.addMask(value),
    });
    // A marker flushes the masker's tail only: a command line still held stays held (never output half).
    const flush = () => this.spool.append(masker.end());
    const writer: StreamWriter = {
      write: (chunk) => commands.write(chunk),
      end: () => {
        if (!this.open.delete(flush)) return;
        commands.end();
        flush();
        this.maskers.delete(masker);
      },
    };
    this.open.add(flush);
    return writer;
  }

  /** Writes a marker line; flushes open streams first so the marker follows what they printed. */
  marker(kind: MarkerKind, data: Record<string, unknown>): void {
    for (const flush of this.open) flush();
    if (this.spool.size > 0 && this.spool.lastByte !== 0x0a) this.spool.append(Buffer.from("\n"));
    this.spool.append(Buffer.from(this.markerMasker.maskAll(formatMarker(this.nonce, kind, data))));
  }

  /** A value to mask from now on in every stream, every later stream and every marker. */
  addMask(value: string): void {
    this.secrets.push(value);
    this.markerMasker.add(value);
    for (const m of this.maskers) m.add(value);
  }

  notice(message: string): void {
    this.marker("notice", { message });
  }
}
