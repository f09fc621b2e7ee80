/**
 * Replicas for tests: `deltaci server` child processes on one fresh PostgreSQL database of the
 * test cluster, sharing the API and controller tokens (env) and one secrets key file.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newToken } from "../../src/base/ids.ts";
import { newKey, writeKeyFile } from "../../src/server/secrets/key-file.ts";
import { TestServer } from "../server-harness.ts";
import { createTestDatabase, type TestDatabase } from "./pg-test-db.ts";
import { waitForReadyUrl } from "./ready-url.ts";

const ROOT = join(import.meta.dirname, "..", "..");

export interface Replica {
  name: string;
  proc: ChildProcess;
  /** The protocol and job API of this replica (TestServer helpers). */
  api: TestServer;
  health(): Promise<{ leaseWaiters: number; sweeper: boolean }>;
  kill9(): Promise<void>;
}

export class ReplicaSet {
  readonly replicas: Replica[] = [];
  private constructor(
    readonly db: TestDatabase,
    readonly root: string,
    readonly apiToken: string,
    readonly controllerToken: string,
    private readonly flags: string[],
  ) {}

  static async create(flags: string[] = []): Promise<ReplicaSet> {
    const db = await createTestDatabase();
    const root = await mkdtemp(join(tmpdir(), "deltaci-replicas-"));
    await writeKeyFile(join(root, "secrets-key"), [newKey()], true);
    return new ReplicaSet(db, root, newToken("api"), newToken("controller"), flags);
  }

  /** Starts replica `name` (its own data dir; a restart reuses it). */
  async start(name: string): Promise<Replica> {
    const proc = spawn(
      process.execPath,
      [join(ROOT, "bin", "deltaci.js"), "server", "--listen", "127.0.0.1:0", "--data-dir", join(this.root, name), "--database", this.db.url,
        "--secrets-key-file", join(this.root, "secrets-key"), "--log-level", "warn", ...this.flags],
      { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, DELTACI_API_TOKEN: this.apiToken, DELTACI_CONTROLLER_TOKEN: this.controllerToken } },
    );
    const url = await waitForReadyUrl(proc);
    const exited = new Promise<void>((r) => proc.once("exit", () => r()));
    const kill9 = async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
      await exited;
    };
    const srv = {
      url, apiToken: this.apiToken, controllerToken: this.controllerToken, apiTokenFile: null, controllerTokenFile: null,
      dataDir: join(this.root, name), stateLocation: "PostgreSQL", logArchive: "", close: kill9,
    };
    const api = new TestServer(srv, join(this.root, name));
    const r: Replica = {
      name, proc, api, kill9,
      health: async () => (await api.call("GET", "/healthz")).body as { leaseWaiters: number; sweeper: boolean },
    };
    this.replicas.push(r);
    return r;
  }

  async close(): Promise<void> {
    for (const r of this.replicas) await r.kill9();
    await rm(this.root, { recursive: true, force: true });
    await this.db.drop();
  }
}

/** Polls `pred` every 20 ms until it holds; throws after `timeoutMs` with `what`. */
export async function until(what: string, pred: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
