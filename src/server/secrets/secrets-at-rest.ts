/**
 * Start-up of secrets at rest: the key file is read (or, for the embedded default only, a key
 * is made and written 0600 once the state proves it holds nothing sealed); a check value in the
 * state proves the file holds the key that sealed it (a missing or wrong key refuses the start
 * with a message that says which); then every stored secret is re-sealed with the first key
 * (rotation) and terminal jobs' secrets are deleted.
 */
import { access } from "node:fs/promises";
import type { Logger } from "pino";
import { DeltaError } from "../../base/errors.ts";
import type { StateStore } from "../engine/state-store.ts";
import { TERMINAL_JOB } from "../engine/transitions.ts";
import { newKey, readKeyFile, rotateKeyFile, writeKeyFile } from "./key-file.ts";
import { SecretBox, type SecretKey } from "./secret-box.ts";

const CHECK_KV = "secrets.check";
const CHECK_TEXT = "deltaci secrets key check";
const CHECK_AAD = "secrets.check";

export interface KeySource {
  path: string;
  /** Given by the operator (--secrets-key-file): a missing file is an error, never made. */
  explicit: boolean;
  /** Put a fresh key first before loading (--rotate-secrets-key); the file must exist. */
  rotate: boolean;
}

export interface LoadedKeys {
  box: SecretBox;
  source: KeySource;
  /** A fresh key not yet written (the embedded default's first start). */
  unwritten: SecretKey[] | null;
}

export async function loadKeys(source: KeySource): Promise<LoadedKeys> {
  const exists = await access(source.path).then(() => true, () => false);
  if (source.rotate) {
    if (!exists) throw new DeltaError("E_SECRETS_KEY", `cannot rotate: secrets key file ${source.path} does not exist`);
    await rotateKeyFile(source.path);
  }
  if (exists) return { box: new SecretBox(await readKeyFile(source.path)), source, unwritten: null };
  if (source.explicit) throw new DeltaError("E_SECRETS_KEY", `secrets key file ${source.path} does not exist (--secrets-key-file); the server will not start without it`);
  const keys = [newKey()];
  return { box: new SecretBox(keys), source, unwritten: keys };
}

/** The slice of the state store this needs. */
export type SealedStore = Pick<StateStore, "getKv" | "write" | "sealStoredSecrets">;

export async function openSecretsAtRest(store: SealedStore, k: LoadedKeys, logger?: Logger): Promise<void> {
  const check = await store.getKv(CHECK_KV);
  if (check !== undefined) {
    const kid = SecretBox.kidOf(check) ?? "?";
    if (k.unwritten) {
      throw new DeltaError("E_SECRETS_KEY", `the state holds secrets sealed with key ${kid}, but the secrets key file ${k.source.path} is missing: restore it, or point --secrets-key-file at it`);
    }
    if (!k.box.has(kid)) {
      throw new DeltaError("E_SECRETS_KEY", `wrong secrets key: the state's secrets were sealed with key ${kid}, which ${k.source.path} does not hold (it holds ${k.box.activeKid} first)`);
    }
    if (k.box.open(check, CHECK_AAD) !== CHECK_TEXT) throw new DeltaError("E_SECRETS_KEY", `secrets key check failed under key ${kid}`);
  }
  const counts = await store.sealStoredSecrets(TERMINAL_JOB);
  if (k.unwritten) await writeKeyFile(k.source.path, k.unwritten, true);
  await store.write((tx) => tx.setKv(CHECK_KV, k.box.seal(CHECK_TEXT, CHECK_AAD)));
  if (counts.resealed + counts.deleted > 0 || k.unwritten) {
    logger?.info({ keyId: k.box.activeKid, keyFile: k.source.path, created: k.unwritten !== null, ...counts }, "secrets at rest: sealed with the first key of the key file");
  }
}
