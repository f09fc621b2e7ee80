import { createHash, randomBytes } from "node:crypto";

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

export function newToken(kind: TokenKind): string {
  return TokenPrefix[kind] + randomBytes(32).toString("base64url");
}

export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Sortable-enough unique ids: a prefix, the time, and random bits. */
export function newId(prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}${randomBytes(8).toString("hex")}`;
}
