/**
 * A TCP fault proxy for tests: sits between a client and a server on loopback and injects
 * latency, connection resets (after a byte budget), and partitions (a black hole: connections
 * hang, nothing is forwarded, so only hard timeouts get the client out). The target can be
 * changed (a restarted server on another port). `close()` destroys every socket it holds.
 */
import { createServer, connect, type AddressInfo, type Server, type Socket } from "node:net";

export interface FaultProxyStats {
  connections: number;
  resets: number;
  bytesUp: number;
  bytesDown: number;
}

export class FaultProxy {
  private server: Server | null = null;
  private target: { host: string; port: number };
  private readonly sockets = new Set<Socket>();
  private latencyMs = 0;
  /** Reset a connection after this many bytes passed through it (0: never). */
  private resetAfterBytes = 0;
  private partitioned = false;
  readonly stats: FaultProxyStats = { connections: 0, resets: 0, bytesUp: 0, bytesDown: 0 };

  constructor(targetUrl: string) {
    this.target = parse(targetUrl);
  }

  async start(): Promise<string> {
    this.server = createServer((client) => this.onConnection(client));
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    const { port } = this.server.address() as AddressInfo;
    return `http://127.0.0.1:${port}`;
  }

  setLatency(ms: number): void {
    this.latencyMs = ms;
  }

  /** Resets every connection once `bytes` have passed through it (either way); 0 turns it off. */
  setResetAfter(bytes: number): void {
    this.resetAfterBytes = bytes;
  }

  /** A black hole: existing connections are cut, new ones hang without a byte forwarded. */
  partition(on: boolean): void {
    this.partitioned = on;
    if (on) for (const s of this.sockets) s.destroy();
  }

  retarget(url: string): void {
    this.target = parse(url);
  }

  /** Cuts every open connection now (like a restart of something in the path). */
  resetAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }

  private track(s: Socket): void {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => {});
  }

  private onConnection(client: Socket): void {
    this.track(client);
    this.stats.connections++;
    if (this.partitioned) {
      // Black hole: read and discard, never answer; the client's own timeout must fire.
      client.on("data", () => {});
      return;
    }
    const upstream = connect(this.target.port, this.target.host);
    this.track(upstream);
    let passed = 0;
    const budget = this.resetAfterBytes;
    const cut = () => {
      this.stats.resets++;
      client.resetAndDestroy();
      upstream.destroy();
    };
    const forward = (from: Socket, to: Socket, dir: "bytesUp" | "bytesDown") => {
      from.on("data", (chunk: Buffer) => {
        if (this.partitioned) return;
        passed += chunk.length;
        this.stats[dir] += chunk.length;
        if (budget > 0 && passed > budget) {
          // Forward part of the chunk, then cut mid-stream.
          const part = chunk.subarray(0, Math.max(0, chunk.length - (passed - budget)));
          if (part.length > 0) to.write(part);
          cut();
          return;
        }
        if (this.latencyMs > 0) {
          from.pause();
          setTimeout(() => {
            if (!to.destroyed) to.write(chunk);
            from.resume();
          }, this.latencyMs);
        } else if (!to.write(chunk)) {
          from.pause();
          to.once("drain", () => from.resume());
        }
      });
      from.on("end", () => to.end());
      from.on("close", () => to.destroy());
    };
    forward(client, upstream, "bytesUp");
    forward(upstream, client, "bytesDown");
  }
}

function parse(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}
