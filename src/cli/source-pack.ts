/**
 * Packs a directory as a job's source: a tar of the files git would see there — tracked and
 * untracked-but-not-ignored, with their working-tree content (uncommitted edits included).
 * Outside a git repository the same .gitignore rules apply, through a throwaway git dir.
 * Always left out: `.git/` and `.deltaci/` (local state, artifacts, tokens).
 */
import { spawn } from "node:child_process";
import { lstatSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { DeltaError } from "../base/errors.ts";

export interface SourceFileList {
  dir: string;
  files: string[];
  /** "git" (a repository) or "gitignore" (a plain directory filtered by its .gitignore files). */
  mode: "git" | "gitignore";
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
 * in a fresh temp dir. Synchronous: a handful of syscalls, where awaited ones would each wait
 * for a thread-pool round trip and a turn of the CLI's busy event loop.
 */
function emptyGitDir(): string {
  const gitDir = mkdtempSync(join(tmpdir(), "deltaci-pack-"));
  mkdirSync(join(gitDir, "objects"));
  mkdirSync(join(gitDir, "refs"));
  writeFileSync(join(gitDir, "HEAD"), "ref: refs/heads/main\n");
  return gitDir;
}

/**
 * Lists and packs in one child process: a shell that runs `git ls-files` (the listing mode, then
 * the list, on fd 3), reads back on its stdin the files to pack and execs `tar` (the archive on
 * stdout). Every spawn from node forks the whole CLI process (~80 MB) and blocks its thread
 * until the child has exec'd: 3–35 ms each for `git rev-parse`, `git ls-files` and `tar` (more
 * under load), on the path of `deltaci run`. The shell's own forks are of a ~1 MB process, off
 * this thread. Arguments: "repo" when a work tree may be around (else "plain"), "list" to stop
 * after the listing (else "pack"), and the throwaway git dir through which a plain directory's
 * .gitignore files apply.
 */
const LIST_AND_PACK = `
command -v git >/dev/null 2>&1 || exit 121
if [ "$1" = repo ] && [ "$(git rev-parse --is-inside-work-tree 2>/dev/null)" = true ]; then
  printf 'git\\0' >&3
  git ls-files -z --cached --others --exclude-standard -- . >&3 || exit 122
else
  printf 'gitignore\\0' >&3
  GIT_DIR="$3" GIT_WORK_TREE="$PWD" git ls-files -z --others --exclude-standard >&3 || exit 122
fi
exec 3>&-
[ "$2" = list ] && exit 0
exec tar -c -f - --null --no-recursion --ignore-failed-read --numeric-owner --owner=0 --group=0 -T -
`;
/**
 * GNU tar's exit code when a file changed while it was read (a log or database being written in
 * the directory): the archive is whole, with that file as read. Such files, and files removed or
 * unreadable between the listing and the read (`--ignore-failed-read`), are warnings, not a
 * failed pack: tar names each on stderr.
 */
const TAR_FILES_CHANGED = 1;
const NO_GIT = 121;
const GIT_FAILED = 122;

/** What the listing child printed on fd 3, as the files to pack (relative to `dir`). */
function filesOf(dir: string, listed: Buffer): SourceFileList {
  const [mode, ...names] = listed.toString("utf8").split("\0");
  const files = names
    .filter((f) => f.length > 0 && !excluded(f))
    .filter((f) => {
      try {
        const st = lstatSync(join(dir, f)); // tracked files deleted in the work tree are skipped
        return st.isFile() || st.isSymbolicLink();
      } catch {
        return false;
      }
    });
  return { dir, files: [...new Set(files)].sort(), mode: mode === "git" ? "git" : "gitignore" };
}

/** Runs LIST_AND_PACK in `dir`; `pack`: also the tar of the listed files (else an empty buffer). */
async function listAndPack(dir: string, pack: boolean): Promise<Packed> {
  const gitDir = emptyGitDir();
  try {
    return await runListAndPack(dir, [mayBeInRepo(dir) ? "repo" : "plain", pack ? "pack" : "list", gitDir]);
  } finally {
    rmSync(gitDir, { recursive: true, force: true });
  }
}

interface Packed {
  list: SourceFileList;
  tar: Buffer;
  /** What tar warned of, one line each (files that changed or went away while packed). */
  warnings: string[];
}

/** Spawns LIST_AND_PACK with `args`; what it listed, and the tar when it packed. */
async function runListAndPack(dir: string, args: string[]): Promise<Packed> {
  const child = spawn("/bin/sh", ["-c", LIST_AND_PACK, "deltaci-pack", ...args], { cwd: dir, stdio: ["pipe", "pipe", "pipe", "pipe"] });
  const listing = child.stdio[3] as Readable;
  const listed: Buffer[] = [];
  const out: Buffer[] = [];
  let err = "";
  child.stdout.on("data", (b: Buffer) => out.push(b));
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  listing.on("data", (b: Buffer) => listed.push(b));
  child.stdin.on("error", () => {}); // a child that exits early is reported by its exit code
  let list: SourceFileList | null = null;
  listing.on("end", () => {
    list = filesOf(dir, Buffer.concat(listed));
    child.stdin.end(Buffer.from(list.files.map((f) => `${f}\0`).join("")));
  });
  const code = await new Promise<number>((resolve, reject) => {
    child.on("error", (e) => reject(new DeltaError("E_INVALID", `cannot list the source files in ${dir} (${e.message})`, { cause: e })));
    child.on("close", (c) => resolve(c ?? 1));
  });
  if (code === NO_GIT) throw new DeltaError("E_INVALID", "cannot run git to list the source files (git not found in PATH); install git");
  if (code === GIT_FAILED) throw new DeltaError("E_INVALID", `git ls-files failed in ${dir}: ${err.trim()}`);
  if ((code !== 0 && code !== TAR_FILES_CHANGED) || list === null) throw new DeltaError("E_INVALID", `tar failed in ${dir}: ${err.trim()}`);
  const warnings = err.split("\n").map((l) => l.replace(/^tar: /, "").trim()).filter((l) => l.length > 0 && !l.startsWith("Exiting with failure status"));
  return { list, tar: Buffer.concat(out), warnings };
}

/** Lists the files to pack, relative to `dir`. */
export async function listSourceFiles(dir: string): Promise<SourceFileList> {
  return (await listAndPack(dir, false)).list;
}

/** The files git would see in `dir` (listSourceFiles) as a tar (ustar/GNU, no compression), in memory. */
export async function packSource(dir: string): Promise<{ tar: Buffer; files: number; mode: SourceFileList["mode"]; warnings: string[] }> {
  const { list, tar, warnings } = await listAndPack(dir, true);
  return { tar, files: list.files.length, mode: list.mode, warnings };
}
