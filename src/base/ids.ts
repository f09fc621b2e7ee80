import * as crypto from "node:crypto";

/** Token kinds and their prefixes (PROTOCOL.md); maskers and scanners look for these. */
export const TokenPrefix = {
  registration: "dci_reg_",
  session: "dci_ses_",
  lease: "dci_lse_",
  controller: "dci_ctl_",
  api: "dci_api_",
} as const;
export type TokenKind = keyof typeof TokenPrefix;

/** Matches any Delta CI token in text (prefix + 43 base64url chars of 256 random bits). */
export const TOKEN_PATTERN = /dci_(?:reg|ses|lse|ctl|api)_[A-Za-z0-9_-]{43}/g;

/**
 * Random bytes read from the OS 4 KiB at a time and handed out once each (a small `randomBytes`
 * call costs microseconds of fixed overhead; `crypto.randomUUID` pools the same way). Bytes are
 * zeroed as they are encoded, so no token's bits stay behind in the pool.
 */
class EntropyPool {
  private buf = Buffer.alloc(0);
  private at = 0;

  take(n: number, encoding: "hex" | "base64url"): string {
    if (this.at + n > this.buf.length) {
      this.buf = crypto.randomBytes(4096);
      this.at = 0;
    }
    const bytes = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    const text = bytes.toString(encoding);
    bytes.fill(0);
    return text;
  }
}

const entropy = new EntropyPool();

export function newToken(kind: TokenKind): string {
  return TokenPrefix[kind] + entropy.take(32, "base64url");
}

/** sha256 of a token, hex (one-shot `crypto.hash` where Node has it: no Hash object per call). */
export const hashToken: (token: string) => string =
  typeof crypto.hash === "function" ? (token) => crypto.hash("sha256", token, "hex") : (token) => crypto.createHash("sha256").update(token).digest("hex");

/** Sortable-enough unique ids: a prefix, the time, and random bits. */
export function newId(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}${entropy.take(8, "hex")}`;
}
