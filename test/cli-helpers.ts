/** Shared by the CLI's end-to-end tests: spawn `node bin/deltaci.js …` and collect its output. */
import { spawn, type ChildProcess } from "node:child_process";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../src/config/paths.ts";

export const BIN = join(projectRoot(), "bin", "deltaci.js");
export const EXAMPLES = join(projectRoot(), "examples");

export interface CliResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface CliRun {
  child: ChildProcess;
  result: Promise<CliResult>;
  /** Resolves once stdout+stderr contain `text`. */
  waitFor(text: string | RegExp, timeoutMs?: number): Promise<void>;
  output(): string;
}

/** Starts the CLI; the returned run is killed (SIGKILL, by pid) if the test ends first. */
export function startCli(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): CliRun {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd, env: { ...process.env, NO_COLOR: "1", ...opts.env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  const waiters: Array<() => void> = [];
  child.stdout?.on("data", (b: Buffer) => {
    stdout += b.toString();
    waiters.forEach((w) => w());
  });
  child.stderr?.on("data", (b: Buffer) => {
    stderr += b.toString();
    waiters.forEach((w) => w());
  });
  const timeoutMs = opts.timeoutMs ?? 180_000;
  const result = new Promise<CliResult>((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  const output = () => stdout + stderr;
  return {
    child,
    result,
    output,
    waitFor: (text, waitMs = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const has = () => (typeof text === "string" ? output().includes(text) : text.test(output()));
        if (has()) return resolve();
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(text)}; output so far:\n${output()}`)), waitMs);
        const check = () => {
          if (!has()) return;
          clearTimeout(timer);
          resolve();
        };
        waiters.push(check);
        void result.then(() => {
          if (has()) return;
          clearTimeout(timer);
          reject(new Error(`the CLI exited before printing ${String(text)}; output:\n${output()}`));
        });
      }),
  };
}

export async function runCli(args: string[], opts: { cwd: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<CliResult> {
  return startCli(args, opts).result;
}

/** A temp dir (removed after the test) holding a copy of examples/<name>. */
export function exampleCopy(t: { after: (fn: () => void) => void }, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `deltaci-cli-e2e-${name}-`));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(join(EXAMPLES, name), dir, { recursive: true });
  return dir;
}

export function tempDir(t: { after: (fn: () => void) => void }, prefix = "deltaci-cli-e2e-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Kills a child still running at the end of a test (by its pid). */
export function killOnExit(t: { after: (fn: () => void) => void }, run: CliRun): void {
  t.after(() => {
    if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill("SIGKILL");
  });
}

export function parseJson<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}\n${text}`);
  }
}
