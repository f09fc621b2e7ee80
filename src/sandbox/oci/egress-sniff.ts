/** The name a redirected connection asks for, from its first bytes: TLS SNI or the HTTP Host header. */

export type Sniffed = { kind: "tls" | "http"; name: string } | { kind: "tls" | "http"; name: null } | { kind: "raw" } | { kind: "more" };

const HTTP_METHOD = /^(GET|POST|PUT|HEAD|DELETE|OPTIONS|PATCH|CONNECT|TRACE) /;

/** `more` until enough has arrived to tell; `raw` when it is neither TLS nor HTTP. */
export function sniffName(b: Buffer): Sniffed {
  if (b.length === 0) return { kind: "more" };
  if (b[0] === 0x16) return sniffTls(b);
  const text = b.subarray(0, 8192).toString("latin1");
  if (HTTP_METHOD.test(text)) {
    const end = text.indexOf("\r\n\r\n");
    const host = /\r\nhost:[ \t]*([^\r\n]*)/i.exec(text);
    if (host?.[1]) return { kind: "http", name: host[1].trim().replace(/:\d+$/, "").replace(/^\[|\]$/g, "") };
    return end === -1 && b.length < 8192 ? { kind: "more" } : { kind: "http", name: null };
  }
  if (b.length < 8 && "GET POST PUT HEAD DELETE OPTIONS PATCH".split(" ").some((m) => m.startsWith(text) || text.startsWith(m))) return { kind: "more" };
  return { kind: "raw" };
}

/** A TLS ClientHello's server_name (RFC 6066), read defensively: any bound crossed is "no name". */
function sniffTls(b: Buffer): Sniffed {
  if (b.length < 5) return { kind: "more" };
  const recordLen = b.readUInt16BE(3);
  if (b.length < 5 + recordLen) return recordLen > 16_384 ? { kind: "tls", name: null } : { kind: "more" };
  const h = b.subarray(5, 5 + recordLen);
  if (h[0] !== 0x01) return { kind: "tls", name: null };
  let p = 4 + 2 + 32; // handshake header, client version, random
  const need = (n: number) => p + n <= h.length;
  if (!need(1)) return { kind: "tls", name: null };
  p += 1 + (h[p] ?? 0); // session id
  if (!need(2)) return { kind: "tls", name: null };
  p += 2 + h.readUInt16BE(p); // cipher suites
  if (!need(1)) return { kind: "tls", name: null };
  p += 1 + (h[p] ?? 0); // compression methods
  if (!need(2)) return { kind: "tls", name: null };
  const extEnd = Math.min(p + 2 + h.readUInt16BE(p), h.length);
  p += 2;
  while (p + 4 <= extEnd) {
    const type = h.readUInt16BE(p);
    const len = h.readUInt16BE(p + 2);
    p += 4;
    if (type === 0 && p + 5 <= extEnd) {
      // server_name_list: list length, name type (0 = host_name), name length, name
      const nameLen = h.readUInt16BE(p + 3);
      if (h[p + 2] === 0 && p + 5 + nameLen <= extEnd) return { kind: "tls", name: h.subarray(p + 5, p + 5 + nameLen).toString("latin1") };
      return { kind: "tls", name: null };
    }
    p += len;
  }
  return { kind: "tls", name: null };
}
