/**
 * Opens the state store a server runs on: SQLite under the data dir (the embedded default), or
 * PostgreSQL when a database URL is given (several replicas may share it). Also loads the
 * operator tokens: a replica never generates its own, they must be shared (env or token files).
 */
import { open } from "node:fs/promises";
import { join } from "node:path";
import { DeltaError } from "../base/errors.ts";
import { SqliteStateStore } from "./db/sqlite-state-store.ts";
import type { StateStore } from "./engine/state-store.ts";
import type { ResolvedOptions } from "./options.ts";
import type { SecretBox } from "./secrets/secret-box.ts";
import { loadOrCreateToken, readToken } from "./tokens.ts";

export type OpenedStore = StateStore & { onHookError: (err: unknown) => void };

export async function openStateStore(opts: ResolvedOptions, databaseUrl: string | undefined, box: SecretBox): Promise<OpenedStore> {
  if (databaseUrl !== undefined) {
    // Loaded only here: the PostgreSQL client's module (and node:tls) cost every SQLite start, `deltaci run`'s included.
    const { PgStateStore } = await import("./db/pg/pg-state-store.ts");
    return PgStateStore.open({ url: databaseUrl, box, applicationName: `deltaci-server:${process.pid}` });
  }
  // The state holds job secrets (sealed): create it owner-only (SQLite gives -wal/-shm the same mode).
  await (await open(join(opts.dataDir, "state.db"), "a", 0o600)).close();
  return new SqliteStateStore(join(opts.dataDir, "state.db"), opts.durability, box);
}

/** The state's place for humans: a database URL loses its password. */
export function stateLocation(dataDir: string, databaseUrl: string | undefined): string {
  if (databaseUrl === undefined) return join(dataDir, "state.db");
  const u = new URL(databaseUrl);
  u.password = "";
  return `PostgreSQL ${u.toString()}`;
}

export interface OperatorToken {
  token: string;
  /** The file it came from (null: given in options / env). */
  path: string | null;
}

/** The API or controller token: given, else `<dataDir>/<file>` (generated there unless `shared`). */
export async function operatorToken(given: string | undefined, dataDir: string, file: "api-token" | "controller-token", shared: boolean): Promise<OperatorToken> {
  if (given) return { token: given, path: null };
  const kind = file === "api-token" ? "api" : "controller";
  if (!shared) return loadOrCreateToken(dataDir, file, kind);
  const token = await readToken(join(dataDir, file));
  if (token === null) {
    const env = file === "api-token" ? "DELTACI_API_TOKEN" : "DELTACI_CONTROLLER_TOKEN";
    throw new DeltaError("E_CONFIG", `with a shared database every replica needs the same ${kind} token: set ${env} or put it in ${join(dataDir, file)}`);
  }
  return { token, path: join(dataDir, file) };
}
