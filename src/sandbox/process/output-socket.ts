/**
 * A step's stdout or stderr as a connected pair of AF_UNIX stream sockets (what `spawn`'s
 * "pipe" is, too): `child` goes to the step as its fd, and our end is read into one reused
 * buffer (`net` `onread`), each read handed to `onChunk` synchronously. A "pipe" child stream
 * allocates a fresh buffer per read instead (about twice the CPU per byte read, and GC).
 */
import { randomBytes } from "node:crypto";
import { createConnection, createServer, type Server, type Socket } from "node:net";

export interface OutputSocket {
  /** The step's end: pass it in `spawn`'s `stdio`, then destroy it (the child holds its own copy). */
  child: Socket;
  /** Resolves once the step's end is closed everywhere (EOF) and every byte went to `onChunk`. */
  ended: Promise<void>;
  /** Stops reading (a process that left the group still holds the step's end). */
  destroy(): void;
}

export async function openOutputSocket(buffer: Buffer, onChunk: (chunk: Buffer) => void): Promise<OutputSocket> {
  // An abstract name (Linux): nothing on disk to remove, and gone with the listener.
  const path = `\0deltaci-step-output-${randomBytes(12).toString("hex")}`;
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(path, resolve));
    const token = randomBytes(16);
    const accepted = acceptTokenHolder(server, token);
    const reader = createConnection({ path, onread: { buffer, callback: (n) => (onChunk(buffer.subarray(0, n)), true) } });
    await new Promise<void>((resolve, reject) => reader.once("connect", resolve).once("error", reject));
    reader.write(token);
    const child = await accepted;
    reader.on("error", () => {});
    const ended = new Promise<void>((resolve) => reader.once("close", () => resolve()));
    return { child, ended, destroy: () => reader.destroy() };
  } finally {
    server.close();
  }
}

/**
 * Anyone on the host may connect to an abstract name: the step's end is the connection that sends
 * `token` first (another would read the step's output). Every other connection is closed: one that
 * sends anything else, and one still short of a token's length when the token holder arrives.
 */
export function acceptTokenHolder(server: Server, token: Buffer): Promise<Socket> {
  const pending = new Set<Socket>();
  return new Promise<Socket>((resolve) => server.on("connection", (s) => {
    let got = Buffer.alloc(0);
    pending.add(s);
    s.on("error", () => {});
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length < token.length) return;
      s.off("data", onData);
      pending.delete(s);
      if (!got.equals(token)) return void s.destroy();
      s.pause();
      for (const other of pending) other.destroy();
      pending.clear();
      resolve(s);
    };
    s.on("data", onData);
  }));
}
