/**
 * Job secrets at rest: AES-256-GCM (node:crypto) under a key from the secrets key file
 * (key-file.ts). A sealed value is `sealed:v1:<kid>:<iv>:<tag>:<ciphertext>` (base64url), bound
 * to its job by the additional data (a sealed value copied onto another job does not open).
 * The first key seals; every key in the file opens (rotation: key-file.ts, seal-pass.ts).
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from "node:crypto";
import { DeltaError } from "../../base/errors.ts";

const PREFIX = "sealed:v1:";

export interface SecretKey {
  /** First 16 hex digits of the key's sha256: names the key in sealed values, never reveals it. */
  kid: string;
  key: Buffer;
}

export function keyId(key: Buffer): string {
  return createHash("sha256").update(key).digest("hex").slice(0, 16);
}

export class SecretBox {
  private readonly byKid: Map<string, Buffer>;
  readonly activeKid: string;

  /** `keys[0]` seals; all of them open. */
  constructor(keys: readonly SecretKey[]) {
    const first = keys[0];
    if (!first) throw new DeltaError("E_CONFIG", "the secrets key file holds no key");
    this.activeKid = first.kid;
    this.byKid = new Map(keys.map((k) => [k.kid, k.key]));
  }

  static isSealed(text: string): boolean {
    return text.startsWith(PREFIX);
  }

  /** The key id a sealed value names (null: not sealed). */
  static kidOf(text: string): string | null {
    return SecretBox.isSealed(text) ? (text.slice(PREFIX.length).split(":")[0] ?? null) : null;
  }

  has(kid: string): boolean {
    return this.byKid.has(kid);
  }

  seal(plain: string, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.byKid.get(this.activeKid) as Buffer, iv);
    c.setAAD(Buffer.from(aad));
    const ct = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return `${PREFIX}${this.activeKid}:${iv.toString("base64url")}:${c.getAuthTag().toString("base64url")}:${ct.toString("base64url")}`;
  }

  /** Throws E_SECRETS_KEY when the key is not in the file or the value does not authenticate. */
  open(sealed: string, aad: string): string {
    const [kid, iv, tag, ct] = sealed.slice(PREFIX.length).split(":");
    const key = kid === undefined ? undefined : this.byKid.get(kid);
    if (!key || iv === undefined || tag === undefined || ct === undefined) {
      throw new DeltaError("E_SECRETS_KEY", `stored secrets were sealed with key ${kid ?? "?"}, which the secrets key file does not hold`);
    }
    try {
      const d = createDecipheriv("aes-256-gcm", key, Buffer.from(iv, "base64url"));
      d.setAAD(Buffer.from(aad));
      d.setAuthTag(Buffer.from(tag, "base64url"));
      return Buffer.concat([d.update(Buffer.from(ct, "base64url")), d.final()]).toString("utf8");
    } catch (err) {
      throw new DeltaError("E_SECRETS_KEY", `stored secrets do not authenticate under key ${kid} (wrong key, or the value was altered)`, { cause: err });
    }
  }
}
