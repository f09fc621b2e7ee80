/**
 * The host end of a job container's control channel: a socketpair whose other end is fd 3 of the
 * container's init (sandbox-helper.c documents the frames). Steps are started by a request over
 * it instead of `crun exec`, so a step costs a fork in the container, not a runtime invocation.
 * One step at a time; closing the channel makes init exit, which ends the whole container.
 */
import type { Duplex } from "node:stream";
import { DeltaError } from "../../base/errors.ts";

export type FrameType = "O" | "E" | "S" | "R";

export interface StepRequest {
  cwd: string;
  argv: string[];
  env: Record<string, string>;
}

export interface FrameHandler {
  frame(type: FrameType, data: Buffer): void;
  /** The channel closed (init is gone) before the step's 'R' frame. */
  closed(): void;
}

const HEADER_BYTES = 5;
/** Init's request buffer (`req` in sandbox-helper.c). */
const MAX_REQUEST_BYTES = 1 << 20;
/** Init never sends more in one frame (FRAME_MAX in sandbox-helper.c); a longer one means a broken channel. */
const MAX_FRAME_BYTES = 64 * 1024;

/** Encodes a step request: NUL-terminated cwd, argc, argv…, envc, env…; throws E_INVALID for a NUL inside or more than init takes. */
export function encodeStepRequest(req: StepRequest): Buffer {
  const env = Object.entries(req.env).map(([k, v]) => `${k}=${v}`);
  const strings = [req.cwd, String(req.argv.length), ...req.argv, String(env.length), ...env];
  if (strings.some((s) => s.includes("\0"))) throw new DeltaError("E_INVALID", "a step's command or environment contains a NUL byte");
  const body = Buffer.from(strings.map((s) => `${s}\0`).join(""), "utf8");
  if (body.length > MAX_REQUEST_BYTES) throw new DeltaError("E_INVALID", `a step's command and environment take ${body.length} bytes, more than the ${MAX_REQUEST_BYTES} a step may have`);
  const header = Buffer.alloc(HEADER_BYTES);
  header.write("X", 0, "latin1");
  header.writeUInt32BE(body.length, 1);
  return Buffer.concat([header, body]);
}

export class InitChannel {
  private pending: Buffer = Buffer.alloc(0);
  private handler: FrameHandler | null = null;
  private ended = false;

  constructor(private readonly socket: Duplex) {
    socket.on("data", (d: Buffer) => this.onData(d));
    socket.on("error", () => this.onEnd());
    socket.on("close", () => this.onEnd());
    socket.on("end", () => this.onEnd());
  }

  get isOpen(): boolean {
    return !this.ended;
  }

  /** Sends a step request; its frames go to `handler` up to and including 'R'. */
  run(req: StepRequest, handler: FrameHandler): void {
    if (this.handler !== null) throw new Error("a step is already running on this channel");
    const frame = encodeStepRequest(req); // throws before anything is registered
    this.handler = handler;
    if (this.ended) {
      this.finish()?.closed();
      return;
    }
    this.socket.write(frame);
  }

  /** Asks init to relay what the running step's pipes hold and close them (after its 'S'). */
  drain(): void {
    if (!this.ended) this.socket.write(Buffer.from([0x44, 0, 0, 0, 0])); // 'D', no data
  }

  /** Flow control: stop reading frames until `resume()` (the step blocks on its output). */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(): void {
    this.socket.destroy();
    this.onEnd();
  }

  private finish(): FrameHandler | null {
    const h = this.handler;
    this.handler = null;
    return h;
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= HEADER_BYTES) {
      const len = this.pending.readUInt32BE(1);
      if (len > MAX_FRAME_BYTES) {
        this.close();
        return;
      }
      if (this.pending.length < HEADER_BYTES + len) break;
      const type = String.fromCharCode(this.pending[0] ?? 0) as FrameType;
      const data = this.pending.subarray(HEADER_BYTES, HEADER_BYTES + len);
      this.pending = this.pending.subarray(HEADER_BYTES + len);
      if (type === "R") this.finish()?.frame(type, data);
      else this.handler?.frame(type, data);
    }
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.finish()?.closed();
  }
}
