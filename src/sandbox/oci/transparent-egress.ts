/**
 * The transparent egress path: a job's TCP reaches the egress proxy's allowlist and audit log
 * without the job knowing of any proxy. Per job, a veth pair joins the job's netns to the
 * runner's (a /30 of 10.214.0.0/16 from the job's index, default route to the runner's end), and
 * an nftables table of its own redirects every TCP connection arriving from that veth to a
 * listener on the runner's end; everything else from it (UDP, forwarding, other local ports) is
 * dropped. The listener learns the connection's original destination from conntrack, then:
 * an allowlisted `IP:port` entry lets raw TCP through; otherwise the name comes from the TLS SNI
 * or the HTTP Host header and goes through the proxy's one decision (`EgressProxy.open`, which
 * resolves the name itself: a job cannot claim an allowed name while dialing another address).
 * Lifecycle: `setUp` once per job (cleans up after itself if it fails), `dispose` once; `reap`
 * removes what a dead runner left for an index. All of it is idempotent.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { promisify } from "node:util";
import { allowMatch, type EgressProxy } from "./egress-proxy.ts";
import { sniffName } from "./egress-sniff.ts";

const exec = promisify(execFile);

/** The job's network namespace: a named one (`ip netns`) or a process's. */
export type JobNetns = { name: string } | { pid: number };

export interface TransparentEgressOptions {
  /** 0–16383, unique among the runner's live jobs (the slot): names the veth, the table, the /30. */
  index: number;
  netns: JobNetns;
  allow: string[];
  proxy: EgressProxy;
  /** How long a connection that matched no `IP:port` entry may take to show its SNI or Host. */
  peekTimeoutMs?: number;
}

export const TRANSPARENT_INDEX_MAX = 16_383;

export function transparentNames(index: number) {
  if (!Number.isInteger(index) || index < 0 || index > TRANSPARENT_INDEX_MAX) throw new Error(`transparent egress index ${index} is outside 0–${TRANSPARENT_INDEX_MAX}`);
  const base = `10.214.${index >> 6}.${(index & 63) * 4}`.split(".").map(Number);
  const at = (n: number) => [...base.slice(0, 3), (base[3] ?? 0) + n].join(".");
  return { hostIf: `dcte${index}h`, jobIf: `dcte${index}j`, table: `deltaci_te_${index}`, hostAddr: at(1), jobAddr: at(2) };
}

/** Original destination of a redirected connection, from the runner netns's conntrack table. */
async function originalDestination(src: string, sport: number, listenPort: number): Promise<{ address: string; port: number } | null> {
  const table = await readFile("/proc/net/nf_conntrack", "latin1").catch(() => "");
  const needle = `src=${src} `;
  for (const line of table.split("\n")) {
    if (!line.includes(needle) || !line.includes(` sport=${sport} `)) continue;
    const m = /src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+) .*?src=\S+ dst=\S+ sport=(\d+) dport=(\d+)/.exec(line);
    if (m?.[1] === src && Number(m[3]) === sport && Number(m[5]) === listenPort && Number(m[6]) === sport) return { address: m[2] ?? "", port: Number(m[4]) };
  }
  return null;
}

async function run(cmd: string, args: string[], input?: string): Promise<void> {
  const p = exec(cmd, args, { timeout: 10_000 });
  if (input !== undefined) p.child.stdin?.end(input);
  await p;
}

export class TransparentEgress {
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly o: TransparentEgressOptions,
    private readonly server: Server,
    readonly port: number,
  ) {}

  static async setUp(o: TransparentEgressOptions): Promise<TransparentEgress> {
    const n = transparentNames(o.index);
    const server = createServer();
    try {
      const peer = "name" in o.netns ? o.netns.name : String(o.netns.pid);
      await run("ip", ["-batch", "-"], `link add ${n.hostIf} type veth peer name ${n.jobIf} netns ${peer}\naddr add ${n.hostAddr}/30 dev ${n.hostIf}\nlink set ${n.hostIf} up\n`);
      const jobSide = `addr add ${n.jobAddr}/30 dev ${n.jobIf}\nlink set ${n.jobIf} up\nlink set lo up\nroute add default via ${n.hostAddr}\n`;
      const inJob = "name" in o.netns ? run("ip", ["-n", o.netns.name, "-batch", "-"], jobSide) : run("nsenter", [`--net=/proc/${o.netns.pid}/ns/net`, "ip", "-batch", "-"], jobSide);
      const listening = new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, n.hostAddr, () => resolve((server.address() as { port: number }).port));
      });
      const [port] = await Promise.all([listening, inJob]);
      await run("nft", ["-f", "-"], [
        `table inet ${n.table} {`,
        `  chain te_pre { type nat hook prerouting priority dstnat; iifname "${n.hostIf}" meta l4proto tcp redirect to :${port}; }`,
        `  chain te_in { type filter hook input priority filter; iifname "${n.hostIf}" tcp dport ${port} accept; iifname "${n.hostIf}" drop; }`,
        `  chain te_fwd { type filter hook forward priority filter; iifname "${n.hostIf}" drop; oifname "${n.hostIf}" drop; }`,
        "}",
      ].join("\n") + "\n");
      const t = new TransparentEgress(o, server, port);
      server.on("connection", (s) => void t.accept(s));
      return t;
    } catch (err) {
      server.close();
      await TransparentEgress.reap(o.index);
      throw err;
    }
  }

  /** Removes the table and the veth of `index` (the job's end goes with it); quiet when absent. */
  static async reap(index: number): Promise<void> {
    const n = transparentNames(index);
    await run("nft", ["delete", "table", "inet", n.table]).catch(() => undefined);
    await run("ip", ["link", "del", n.hostIf]).catch(() => undefined);
  }

  private async accept(s: Socket): Promise<void> {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => s.destroy());
    s.pause();
    const dst = await originalDestination(s.remoteAddress ?? "", s.remotePort ?? 0, this.port);
    if (dst === null) {
      this.o.proxy.deny("unknown", 0, "no original destination");
      return void s.destroy();
    }
    // An `IP:port` entry admits any protocol, server-speaks-first ones included: no peeking.
    if (allowMatch(this.o.allow, dst.address, dst.port) !== null) return this.forward(s, dst.address, dst.port, Buffer.alloc(0));
    const first = await this.peek(s);
    const sniffed = sniffName(first);
    if ((sniffed.kind === "tls" || sniffed.kind === "http") && "name" in sniffed && sniffed.name) return this.forward(s, sniffed.name, dst.port, first);
    this.o.proxy.deny(dst.address, dst.port, sniffed.kind === "raw" ? "not in allowlist" : `no ${sniffed.kind === "more" ? "name in time" : "name"}`);
    s.destroy();
  }

  private async forward(s: Socket, host: string, port: number, first: Buffer): Promise<void> {
    const up = await this.o.proxy.open(host, port, "transparent");
    if (typeof up === "string") return void s.destroy();
    this.o.proxy.splice(s, up, first);
  }

  /** The connection's first bytes, until they name a destination, stop being TLS/HTTP-like, or time runs out. */
  private peek(s: Socket): Promise<Buffer> {
    return new Promise((resolve) => {
      let buf = Buffer.alloc(0);
      const done = () => {
        clearTimeout(timer);
        s.off("data", onData);
        s.off("close", done);
        s.pause();
        resolve(buf);
      };
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (sniffName(buf).kind !== "more" || buf.length > 16_384) done();
      };
      const timer = setTimeout(done, this.o.peekTimeoutMs ?? 2000);
      s.on("data", onData);
      s.once("close", done);
      s.resume();
    });
  }

  async dispose(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await TransparentEgress.reap(this.o.index);
  }
}
