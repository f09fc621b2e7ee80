/**
 * The secrets key file: one AES-256 key per line, base64 of 32 random bytes; `#` lines are
 * comments. The first key seals new secrets, every key opens (so a rotation keeps the old key
 * below the new one until the server re-sealed everything with the new one; seal-pass.ts).
 * The file must be owner-only: a group- or world-readable key file is refused.
 */
import { randomBytes } from "node:crypto";
import { chmod, open, readFile, rename, stat } from "node:fs/promises";
import { DeltaError } from "../../base/errors.ts";
import { keyId, type SecretKey } from "./secret-box.ts";

const KEY_BYTES = 32;

const header = "# Delta CI secrets key file: the first key seals, all keys open. Keep it out of backups of the data dir.\n";

export async function readKeyFile(path: string): Promise<SecretKey[]> {
  let text: string;
  try {
    const st = await stat(path);
    if ((st.mode & 0o077) !== 0) throw new DeltaError("E_SECRETS_KEY", `secrets key file ${path} is readable by others (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it`);
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new DeltaError("E_SECRETS_KEY", `secrets key file ${path} does not exist`, { cause: err });
    throw err;
  }
  const keys: SecretKey[] = [];
  for (const [i, raw] of text.split("\n").entries()) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const key = /^[A-Za-z0-9+/]{43}=$/.test(line) ? Buffer.from(line, "base64") : null;
    if (!key || key.length !== KEY_BYTES) throw new DeltaError("E_SECRETS_KEY", `secrets key file ${path}:${i + 1}: not a base64 32-byte key`);
    keys.push({ kid: keyId(key), key });
  }
  if (keys.length === 0) throw new DeltaError("E_SECRETS_KEY", `secrets key file ${path} holds no key`);
  return keys;
}

export function newKey(): SecretKey {
  const key = randomBytes(KEY_BYTES);
  return { kid: keyId(key), key };
}

/** Writes `keys` (mode 0600). `exclusive`: fails when the file exists (a key is never overwritten). */
export async function writeKeyFile(path: string, keys: readonly SecretKey[], exclusive: boolean): Promise<void> {
  const target = exclusive ? path : `${path}.new`;
  const fh = await open(target, exclusive ? "wx" : "w", 0o600);
  try {
    await fh.writeFile(`${header}${keys.map((k) => k.key.toString("base64")).join("\n")}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await chmod(target, 0o600);
  if (!exclusive) await rename(target, path);
}

/** Puts a fresh key first (the old ones stay, to open what they sealed); returns the new key's id. */
export async function rotateKeyFile(path: string): Promise<string> {
  const old = await readKeyFile(path);
  const fresh = newKey();
  await writeKeyFile(path, [fresh, ...old], false);
  return fresh.kid;
}
