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

/** Frames whose payload is passed on piece by piece as it arrives (output: a byte stream). */
const STREAMED = new Set<string>(["O", "E"]);

export class InitChannel {
  /** A header not yet complete (it may straddle reads). */
  private head: Buffer = Buffer.alloc(0);
  /** The frame whose payload is being read: its type, bytes still to come, and (unless streamed) what came. */
  private body: { type: FrameType; left: number; parts: Buffer[] } | null = null;
  private handler: FrameHandler | null = null;
  private ended = false;

  private constructor(private socket: Duplex | null) {}

  /**
   * A channel over the stream `connect` opens, which hands every read to `read`, synchronously
   * (the chunk may be a reused buffer: it is parsed, and output payloads passed on, in the call).
   */
  static async open(connect: (read: (chunk: Buffer) => void) => Promise<Duplex>): Promise<InitChannel> {
    const channel = new InitChannel(null);
    const socket = await connect((chunk) => channel.onData(chunk));
    channel.socket = socket;
    socket.on("error", () => channel.onEnd());
    socket.on("close", () => channel.onEnd());
    socket.on("end", () => channel.onEnd());
    if (socket.destroyed) channel.onEnd();
    return channel;
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
    this.socket?.write(frame);
  }

  /** Asks init to relay what the running step's pipes hold and close them (after its 'S'). */
  drain(): void {
    if (!this.ended) this.socket?.write(Buffer.from([0x44, 0, 0, 0, 0])); // 'D', no data
  }

  close(): void {
    this.socket?.destroy();
    this.onEnd();
  }

  private finish(): FrameHandler | null {
    const h = this.handler;
    this.handler = null;
    return h;
  }

  /**
   * Frames straddle reads (init's are up to 64 KiB + header, as are reads): output payloads go
   * on as views of each read, with no copy; only a header or a status frame is gathered (copied:
   * the read's buffer is reused).
   */
  private onData(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.ended) {
      const body = this.body;
      if (body === null) {
        const need = HEADER_BYTES - this.head.length;
        const got = chunk.subarray(at, at + need);
        at += got.length;
        this.head = this.head.length === 0 && got.length === HEADER_BYTES ? got : Buffer.concat([this.head, got]); // a whole header is used in this call
        if (this.head.length < HEADER_BYTES) return;
        const len = this.head.readUInt32BE(1);
        const type = String.fromCharCode(this.head[0] ?? 0) as FrameType;
        this.head = Buffer.alloc(0);
        if (len > MAX_FRAME_BYTES) {
          this.close();
          return;
        }
        this.body = { type, left: len, parts: [] };
        if (len === 0) this.endFrame();
        continue;
      }
      const piece = chunk.subarray(at, at + body.left);
      at += piece.length;
      body.left -= piece.length;
      if (STREAMED.has(body.type)) this.handler?.frame(body.type, piece);
      else body.parts.push(Buffer.from(piece));
      if (body.left === 0) this.endFrame();
    }
  }

  /** The current frame's payload is complete: a gathered frame is delivered now. */
  private endFrame(): void {
    const body = this.body;
    this.body = null;
    if (body === null || STREAMED.has(body.type)) return;
    const data = body.parts.length === 1 ? (body.parts[0] as Buffer) : Buffer.concat(body.parts);
    if (body.type === "R") this.finish()?.frame(body.type, data);
    else this.handler?.frame(body.type, data);
  }

  private onEnd(): void {
    if (this.ended) return;
    this.ended = true;
    this.finish()?.closed();
  }
}
