/**
 * The transparent path's name service: a job's DNS query for a name its allowlist names gets an
 * address of the job's own from 198.18.0.0/15 (a range reserved for tests, never routed), which
 * stands for that name; a connection to it is then decided on the name (`EgressProxy.open`), so a
 * client that only dials addresses (ssh) reaches allowed hosts by name. Other names get NXDOMAIN,
 * other query types an empty answer. The runner resolves the name only when the job connects.
 */
import { allowMatch } from "./egress-proxy.ts";

export interface DnsQuery {
  id: number;
  name: string;
  type: number;
  /** The question section as received (echoed in the answer). */
  question: Buffer;
  recursionDesired: boolean;
}

const TYPE_A = 1;
const FAKE_BASE = (198 << 24) | (18 << 16);
/** 198.18.0.1 … 198.19.255.254. */
export const FAKE_ADDRESSES = (1 << 17) - 2;

/** One standard query with one question, or null (then nothing is answered). */
export function parseDnsQuery(b: Buffer): DnsQuery | null {
  if (b.length < 12 || b.length > 512) return null;
  const flags = b.readUInt16BE(2);
  if ((flags & 0x8000) !== 0 || ((flags >> 11) & 0xf) !== 0 || b.readUInt16BE(4) !== 1) return null;
  const labels: string[] = [];
  let p = 12;
  for (;;) {
    const len = b[p];
    if (len === undefined || len > 63) return null; // compression pointers have no place in a question
    p += 1;
    if (len === 0) break;
    if (p + len > b.length) return null;
    labels.push(b.subarray(p, p + len).toString("latin1"));
    p += len;
  }
  if (p + 4 > b.length) return null;
  const name = labels.join(".").toLowerCase();
  if (name.length > 253) return null;
  return { id: b.readUInt16BE(0), name, type: b.readUInt16BE(p), question: b.subarray(12, p + 4), recursionDesired: (flags & 0x0100) !== 0 };
}

/** The answer: `address` (dotted IPv4) for an A question, none for other types; NXDOMAIN when `address` is null. */
export function dnsAnswer(q: DnsQuery, address: string | null): Buffer {
  const withAnswer = address !== null && q.type === TYPE_A;
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  header.writeUInt16BE(0x8000 | 0x0400 | (q.recursionDesired ? 0x0100 : 0) | 0x0080 | (address === null ? 3 : 0), 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(withAnswer ? 1 : 0, 6);
  if (!withAnswer) return Buffer.concat([header, q.question]);
  const rr = Buffer.alloc(16);
  rr.writeUInt16BE(0xc00c, 0); // the question's name
  rr.writeUInt16BE(TYPE_A, 2);
  rr.writeUInt16BE(1, 4); // IN
  rr.writeUInt32BE(5, 6); // TTL: the mapping is the job's, not the world's
  rr.writeUInt16BE(4, 10);
  address.split(".").forEach((o, i) => rr.writeUInt8(Number(o), 12 + i));
  return Buffer.concat([header, q.question, rr]);
}

/** The `n`th (0-based) stand-in address. */
export function fakeAddress(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n >= FAKE_ADDRESSES) throw new Error(`stand-in address ${n} is out of range`);
  const v = (FAKE_BASE + n + 1) >>> 0;
  return [v >>> 24, (v >> 16) & 255, (v >> 8) & 255, v & 255].join(".");
}

/** Whether an allowlist entry names `host` (on any port): the name is worth a stand-in address. */
export function nameAllowed(allow: readonly string[], host: string): boolean {
  return allowMatch(allow.map((p) => p.replace(/:\d+$/, "")), host, 0) !== null;
}
