/**
 * The transparent egress path: a job's TCP reaches the egress proxy's allowlist and audit log
 * without the job knowing of any proxy. Per slot (made once, reused by the slot's jobs), a veth
 * pair joins a network namespace to the runner's (a /31 of 10.214.0.0/15 from the slot's index,
 * default route to the runner's end), and an nftables table of its own redirects every TCP
 * connection arriving from that veth to a listener on the runner's end; everything else from it
 * (UDP, forwarding, other local ports) is dropped. The listener learns the connection's original
 * destination from conntrack, then: an allowlisted `IP:port` entry lets raw TCP through;
 * otherwise the name comes from the TLS SNI or the HTTP Host header and goes through the proxy's
 * one decision (`EgressProxy.open`, which resolves the name itself: a job cannot claim an allowed
 * name while dialing another address).
 * Lifecycle: `setUp` once per slot (cleans up after itself if it fails); per job `attach` (the
 * job's allowlist and proxy; in-process, no spawn) and the attachment's `detach` (closes the job's
 * connections; until the next attach every connection is dropped); `dispose` once; `reap`
 * removes what a dead runner left for an index. All of it is idempotent.
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server, type Socket } from "node:net";
import { promisify } from "node:util";
import { allowMatch, type EgressProxy } from "./egress-proxy.ts";
import { sniffName } from "./egress-sniff.ts";
import { dnsAnswer, fakeAddress, FAKE_ADDRESSES, nameAllowed, parseDnsQuery } from "./egress-dns.ts";

const exec = promisify(execFile);

/** The job's network namespace: a named one (`ip netns`) or a process's. */
export type JobNetns = { name: string } | { pid: number };

export interface TransparentEgressOptions {
  /** 0–65535, unique among the runner's slots: names the veth, the table, the /31. */
  index: number;
  netns: JobNetns;
  /** How long a connection that matched no `IP:port` entry may take to show its SNI or Host. */
  peekTimeoutMs?: number;
}

/** What one job brings: its allowlist and its proxy (decisions, audit log). */
export interface EgressJob {
  allow: string[];
  proxy: EgressProxy;
}

/** A job attached to the slot's path; `detach` closes its connections (idempotent). */
export interface EgressAttachment {
  detach(): void;
}

interface Attached extends EgressJob {
  sockets: Set<Socket>;
  detached: boolean;
  /** The job's stand-in addresses (egress-dns.ts): address → name and back. */
  byAddress: Map<string, string>;
  byName: Map<string, string>;
}

/** Every slot index (slots.ts's SLOT_MAX_INDEX is below it): 10.214.0.0/15 holds 65536 /31s. */
export const TRANSPARENT_INDEX_MAX = 65_535;

export function transparentNames(index: number) {
  if (!Number.isInteger(index) || index < 0 || index > TRANSPARENT_INDEX_MAX) throw new Error(`transparent egress index ${index} is outside 0–${TRANSPARENT_INDEX_MAX}`);
  const at = (n: number) => `10.${214 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
  return { hostIf: `dcte${index}h`, jobIf: `dcte${index}j`, table: `deltaci_te_${index}`, netns: `deltaci-te-${index}`, hostAddr: at(index * 2), jobAddr: at(index * 2 + 1) };
}

/** The job's /etc/resolv.conf: the slot's name service on the runner's end of the veth. */
export function transparentResolvConf(index: number): string {
  return `# deltaci transparent egress: names on the job's allowlist only\nnameserver ${transparentNames(index).hostAddr}\noptions timeout:1 attempts:2\n`;
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
  private attached: Attached | null = null;

  private constructor(
    private readonly o: TransparentEgressOptions,
    private readonly server: Server,
    private readonly dns: UdpSocket,
    readonly port: number,
  ) {}

  static async setUp(o: TransparentEgressOptions): Promise<TransparentEgress> {
    const n = transparentNames(o.index);
    const server = createServer();
    const dns = createSocket("udp4");
    try {
      const peer = "name" in o.netns ? o.netns.name : String(o.netns.pid);
      await run("ip", ["-batch", "-"], `link add ${n.hostIf} type veth peer name ${n.jobIf} netns ${peer}\naddr add ${n.hostAddr}/31 dev ${n.hostIf}\nlink set ${n.hostIf} up\n`);
      const jobSide = `addr add ${n.jobAddr}/31 dev ${n.jobIf}\nlink set ${n.jobIf} up\nlink set lo up\nroute add default via ${n.hostAddr}\n`;
      const inJob = "name" in o.netns ? run("ip", ["-n", o.netns.name, "-batch", "-"], jobSide) : run("nsenter", [`--net=/proc/${o.netns.pid}/ns/net`, "ip", "-batch", "-"], jobSide);
      const listening = new Promise<number>((resolve, reject) => {
        server.once("error", reject);
        server.listen(0, n.hostAddr, () => resolve((server.address() as { port: number }).port));
      });
      const dnsBound = new Promise<void>((resolve, reject) => {
        dns.once("error", reject);
        dns.bind(53, n.hostAddr, () => resolve());
      });
      const [port] = await Promise.all([listening, inJob.then(() => dnsBound)]);
      await run("nft", ["-f", "-"], [
        `table inet ${n.table} {`,
        `  chain te_pre { type nat hook prerouting priority dstnat; iifname "${n.hostIf}" meta l4proto tcp redirect to :${port}; }`,
        `  chain te_in { type filter hook input priority filter; iifname "${n.hostIf}" tcp dport ${port} accept; iifname "${n.hostIf}" ip daddr ${n.hostAddr} udp dport 53 accept; iifname "${n.hostIf}" drop; }`,
        `  chain te_fwd { type filter hook forward priority filter; iifname "${n.hostIf}" drop; oifname "${n.hostIf}" drop; }`,
        "}",
      ].join("\n") + "\n");
      const t = new TransparentEgress(o, server, dns, port);
      server.on("connection", (s) => void t.accept(s));
      dns.removeAllListeners("error");
      dns.on("error", () => undefined); // a send to a job that is gone
      dns.on("message", (m, from) => t.lookup(m, from));
      return t;
    } catch (err) {
      server.close();
      dns.close();
      await TransparentEgress.reap(o.index);
      throw err;
    }
  }

  /**
   * The slot's own path: a named netns (`ip netns`, see `transparentNames(index).netns`) for its
   * transparent jobs' containers to join, with the plumbing of `setUp`. `reap` removes the netns too.
   */
  static async forSlot(index: number, peekTimeoutMs?: number): Promise<TransparentEgress> {
    const n = transparentNames(index);
    await TransparentEgress.reap(index); // what a dead runner left for the slot
    await run("ip", ["netns", "add", n.netns]);
    return TransparentEgress.setUp({ index, netns: { name: n.netns }, ...(peekTimeoutMs !== undefined ? { peekTimeoutMs } : {}) });
  }

  /** Removes the table, the veth (the job's end goes with it) and the slot netns of `index`; quiet when absent. */
  static async reap(index: number): Promise<void> {
    const n = transparentNames(index);
    await run("nft", ["delete", "table", "inet", n.table]).catch(() => undefined);
    await run("ip", ["link", "del", n.hostIf]).catch(() => undefined);
    await run("ip", ["netns", "del", n.netns]).catch(() => undefined);
  }

  /** Whether `index` has a veth or a slot netns (a cheap look, no spawn): what `reap` would remove. */
  static present(index: number): boolean {
    const n = transparentNames(index);
    return existsSync(`/sys/class/net/${n.hostIf}`) || existsSync(`/run/netns/${n.netns}`);
  }

  /** Whether its veth is still there (and its netns, if it made one): a path someone broke is made anew. */
  intact(): boolean {
    const n = transparentNames(this.o.index);
    return existsSync(`/sys/class/net/${n.hostIf}`) && (!("name" in this.o.netns) || existsSync(`/run/netns/${this.o.netns.name}`));
  }

  /** The slot's job from now on; a job still attached is detached first (its connections closed). */
  attach(job: EgressJob): EgressAttachment {
    this.attached?.sockets.forEach((s) => s.destroy());
    const a: Attached = { ...job, sockets: new Set(), detached: false, byAddress: new Map(), byName: new Map() };
    this.attached = a;
    return {
      detach: () => {
        a.detached = true;
        if (this.attached === a) this.attached = null;
        for (const s of a.sockets) s.destroy();
        a.sockets.clear();
      },
    };
  }

  private async accept(s: Socket): Promise<void> {
    this.sockets.add(s);
    s.on("close", () => this.sockets.delete(s));
    s.on("error", () => s.destroy());
    s.pause();
    // Decided for the job attached when the connection came; dropped (not audited) when none is.
    const a = this.attached;
    if (a === null) return void s.destroy();
    a.sockets.add(s);
    s.on("close", () => a.sockets.delete(s));
    const dst = await originalDestination(s.remoteAddress ?? "", s.remotePort ?? 0, this.port);
    if (a.detached) return void s.destroy();
    if (dst === null) {
      a.proxy.deny("unknown", 0, "no original destination");
      return void s.destroy();
    }
    // A stand-in address the job looked up: decided on the name, any protocol, no peeking.
    const named = a.byAddress.get(dst.address);
    if (named !== undefined) return this.forward(a, s, named, dst.port, Buffer.alloc(0));
    // An `IP:port` entry admits any protocol, server-speaks-first ones included: no peeking.
    if (allowMatch(a.allow, dst.address, dst.port) !== null) return this.forward(a, s, dst.address, dst.port, Buffer.alloc(0));
    const first = await this.peek(s);
    if (a.detached) return void s.destroy();
    const sniffed = sniffName(first);
    if ((sniffed.kind === "tls" || sniffed.kind === "http") && "name" in sniffed && sniffed.name) return this.forward(a, s, sniffed.name, dst.port, first);
    a.proxy.deny(dst.address, dst.port, sniffed.kind === "raw" ? "not in allowlist" : `no ${sniffed.kind === "more" ? "name in time" : "name"}`);
    s.destroy();
  }

  private async forward(a: Attached, s: Socket, host: string, port: number, first: Buffer): Promise<void> {
    const up = await a.proxy.open(host, port, "transparent");
    if (typeof up === "string") return void s.destroy();
    if (a.detached) {
      up.destroy();
      return void s.destroy();
    }
    a.proxy.splice(s, up, first);
  }

  /** Answers a job's DNS query: a stand-in address for a name on its allowlist, else NXDOMAIN. */
  private lookup(m: Buffer, from: { address: string; port: number }): void {
    const q = parseDnsQuery(m);
    if (q === null) return;
    const a = this.attached;
    let address: string | null = null;
    if (a !== null && nameAllowed(a.allow, q.name)) {
      address = a.byName.get(q.name) ?? null;
      if (address === null && a.byName.size < FAKE_ADDRESSES) {
        address = fakeAddress(a.byName.size);
        a.byName.set(q.name, address);
        a.byAddress.set(address, q.name);
      }
    }
    this.dns.send(dnsAnswer(q, address), from.port, from.address);
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
    this.attached = null;
    try {
      this.dns.close();
    } catch {} // closed already: dispose is idempotent
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await TransparentEgress.reap(this.o.index);
  }
}
