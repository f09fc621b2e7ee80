/**
 * A git server of our own for source tests: a bare repository with two commits on `main`, its
 * default branch (hello.txt = "first", then "second"), and a branch `other` forked from the first
 * commit with one commit of its own (hello.txt = "other"), served over git's dumb HTTP protocol by python3's
 * http.server inside a test network namespace (sandbox-nethost.ts). Only that namespace's
 * address is contacted. `close()` stops the server and removes the namespace and the temp dir,
 * also after a failed start.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createNetHost, type NetHost } from "./sandbox-nethost.ts";

export interface GitHttpHost {
  /** The namespace's address, e.g. 10.213.4.2. */
  address: string;
  port: number;
  /** The repository's path on the server. */
  repoPath: string;
  /** `http://ADDRESS:PORT/repo.git`. */
  url: string;
  /** The first and second (tip of `main`) commits. */
  first: string;
  second: string;
  /** The tip of branch `other`, on no other branch. */
  other: string;
  close(): void;
}

/** The port inside the namespace (its own, so a fixed port cannot collide). */
export const GIT_HTTP_PORT = 8090;

/** Builds the repository in `dir`; returns the commit shas. */
function makeRepo(dir: string): { first: string; second: string; other: string } {
  const g = (cwd: string, ...args: string[]) => execFileSync("git", ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", ...args], { cwd, stdio: "pipe" }).toString().trim();
  const work = join(dir, "work");
  mkdirSync(work, { recursive: true });
  g(work, "init", "-q");
  writeFileSync(join(work, "hello.txt"), "first\n");
  g(work, "add", "hello.txt");
  g(work, "commit", "-q", "-m", "one");
  const first = g(work, "rev-parse", "HEAD");
  writeFileSync(join(work, "hello.txt"), "second\n");
  g(work, "commit", "-q", "-am", "two");
  const second = g(work, "rev-parse", "HEAD");
  g(work, "checkout", "-q", "-b", "other", first);
  writeFileSync(join(work, "hello.txt"), "other\n");
  g(work, "commit", "-q", "-am", "three");
  const other = g(work, "rev-parse", "HEAD");
  g(work, "checkout", "-q", "main");
  g(dir, "clone", "-q", "--bare", work, join(dir, "repo.git"));
  g(join(dir, "repo.git"), "update-server-info");
  return { first, second, other };
}

export async function startGitHttpHost(): Promise<GitHttpHost> {
  const dir = mkdtempSync(join(tmpdir(), "deltaci-git-"));
  let host: NetHost | null = null;
  let server: ChildProcess | null = null;
  const close = () => {
    if (server?.pid && server.exitCode === null && server.signalCode === null) server.kill("SIGKILL");
    host?.remove();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const { first, second, other } = makeRepo(dir);
    host = await createNetHost();
    const srv = spawn("ip", ["netns", "exec", host.ns, "python3", "-u", "-m", "http.server", String(GIT_HTTP_PORT), "--bind", host.address, "--directory", dir], { stdio: ["ignore", "pipe", "pipe"] });
    server = srv;
    await new Promise<void>((resolve, reject) => {
      let seen = "";
      const onData = (c: Buffer) => {
        seen += c.toString();
        if (seen.includes("Serving")) resolve();
      };
      srv.stdout?.on("data", onData);
      srv.stderr?.on("data", onData);
      srv.once("exit", (code) => reject(new Error(`git http server exited ${code}: ${seen}`)));
    });
    const address = host.address;
    return { address, port: GIT_HTTP_PORT, repoPath: "/repo.git", url: `http://${address}:${GIT_HTTP_PORT}/repo.git`, first, second, other, close };
  } catch (err) {
    close();
    throw err;
  }
}
