/**
 * Packs a directory as a job's source: a tar of the files git would see there — tracked and
 * untracked-but-not-ignored, with their working-tree content (uncommitted edits included).
 * Outside a git repository the same .gitignore rules apply, through a throwaway git dir.
 * Always left out: `.git/` and `.deltaci/` (local state, artifacts, tokens).
 */
import { spawn } from "node:child_process";
import { lstatSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { DeltaError } from "../base/errors.ts";

export interface SourceFileList {
  dir: string;
  files: string[];
  /** "git" (a repository) or "gitignore" (a plain directory filtered by its .gitignore files). */
  mode: "git" | "gitignore";
}

function run(cmd: string, args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; input?: Buffer }): Promise<{ code: number; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: [opts.input ? "pipe" : "ignore", "pipe", "pipe"] });
    const out: Buffer[] = [];
    let err = "";
    child.stdout?.on("data", (b: Buffer) => out.push(b));
    child.stderr?.on("data", (b: Buffer) => (err += b.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out), stderr: err }));
    if (opts.input && child.stdin) {
      child.stdin.on("error", () => {}); // a child that exits early is reported by its exit code
      child.stdin.end(opts.input);
    }
  });
}

const excluded = (f: string) => f === ".deltaci" || f.startsWith(".deltaci/") || f.startsWith(".git/") || f === ".git";

/**
 * False when git could not find a work tree around `dir`: no `.git` in it or above it, and no
 * `GIT_DIR`/`GIT_WORK_TREE` in the environment. Then `git rev-parse` (a fork of this process,
 * 5–15 ms of its thread on `deltaci run`'s start) would only say so.
 */
function mayBeInRepo(dir: string): boolean {
  if (process.env.GIT_DIR !== undefined || process.env.GIT_WORK_TREE !== undefined) return true;
  for (let d = resolve(dir); ; d = dirname(d)) {
    if (lstatSync(join(d, ".git"), { throwIfNoEntry: false }) !== undefined) return true;
    if (dirname(d) === d) return false;
  }
}

/**
 * What `git init --bare --template=` makes that `git ls-files` needs: HEAD, objects/ and refs/,
 * written here rather than by another git process.
 */
async function emptyGitDir(gitDir: string): Promise<void> {
  await mkdir(join(gitDir, "objects"));
  await mkdir(join(gitDir, "refs"));
  await writeFile(join(gitDir, "HEAD"), "ref: refs/heads/main\n");
}

/** Lists the files to pack, relative to `dir`. */
export async function listSourceFiles(dir: string): Promise<SourceFileList> {
  const inRepo = mayBeInRepo(dir) ? await run("git", ["rev-parse", "--is-inside-work-tree"], { cwd: dir }).catch((err: Error) => {
    throw new DeltaError("E_INVALID", `cannot run git to list the source files (${err.message}); install git`, { cause: err });
  }) : null;
  let listed: Buffer;
  let mode: SourceFileList["mode"];
  if (inRepo !== null && inRepo.code === 0 && inRepo.stdout.toString().trim() === "true") {
    const r = await run("git", ["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", "."], { cwd: dir });
    if (r.code !== 0) throw new DeltaError("E_INVALID", `git ls-files failed in ${dir}: ${r.stderr.trim()}`);
    listed = r.stdout;
    mode = "git";
  } else {
    const gitDir = await mkdtemp(join(tmpdir(), "deltaci-pack-"));
    try {
      const env = { ...process.env, GIT_DIR: gitDir, GIT_WORK_TREE: dir };
      await emptyGitDir(gitDir);
      const r = await run("git", ["ls-files", "-z", "--others", "--exclude-standard"], { cwd: dir, env }).catch((err: Error) => {
        throw new DeltaError("E_INVALID", `cannot run git to list the source files (${err.message}); install git`, { cause: err });
      });
      if (r.code !== 0) throw new DeltaError("E_INVALID", `git ls-files failed in ${dir}: ${r.stderr.trim()}`);
      listed = r.stdout;
      mode = "gitignore";
    } finally {
      await rm(gitDir, { recursive: true, force: true });
    }
  }
  const files = listed
    .toString("utf8")
    .split("\0")
    .filter((f) => f.length > 0 && !excluded(f))
    .filter((f) => {
      try {
        const st = lstatSync(join(dir, f)); // tracked files deleted in the work tree are skipped
        return st.isFile() || st.isSymbolicLink();
      } catch {
        return false;
      }
    });
  return { dir, files: [...new Set(files)].sort(), mode };
}

/** A tar (ustar/GNU, no compression) of `files` under `dir`, in memory. */
export async function tarFiles(dir: string, files: string[]): Promise<Buffer> {
  const input = Buffer.from(files.map((f) => `${f}\0`).join(""));
  const r = await run("tar", ["-c", "-f", "-", "--null", "--no-recursion", "--numeric-owner", "--owner=0", "--group=0", "-T", "-"], { cwd: dir, input });
  if (r.code !== 0) throw new DeltaError("E_INVALID", `tar failed in ${dir}: ${r.stderr.trim()}`);
  return r.stdout;
}

export async function packSource(dir: string): Promise<{ tar: Buffer; files: number; mode: SourceFileList["mode"] }> {
  const list = await listSourceFiles(dir);
  const tar = await tarFiles(dir, list.files);
  return { tar, files: list.files.length, mode: list.mode };
}
