/**
 * Clones a job's git source into the empty workspace inside the sandbox, as the job's user and
 * through the job's network policy (git takes the egress proxy from the sandbox env). URL, ref and
 * commit reach the script through env vars, never interpolated into shell. Output goes to the job
 * log; the URL is printed without its userinfo.
 */
import type { JobLog } from "../logs/job-log.ts";
import type { Failure } from "../protocol/schemas.ts";
import type { Sandbox } from "../sandbox/types.ts";

export interface GitSource { url: string; ref: string; commit?: string | null | undefined }

const SCRIPT = `set -e
if [ -n "$DELTACI_GIT_COMMIT" ]; then
  git clone --quiet -- "$DELTACI_GIT_URL" .
  git checkout --quiet "$DELTACI_GIT_COMMIT" 2>/dev/null || { git fetch --quiet origin "$DELTACI_GIT_COMMIT" && git checkout --quiet "$DELTACI_GIT_COMMIT"; }
else
  git clone --quiet --branch "$DELTACI_GIT_REF" -- "$DELTACI_GIT_URL" .
fi
git -c core.pager=cat log -1 --format='checked out %H'
`;

/** The URL without user:password@. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    u.username = "";
    u.password = "";
    return u.toString();
  } catch {
    return url.replace(/\/\/[^/@]*@/, "//");
  }
}

/** Runs the clone; returns a source_error failure, or null on success. */
export async function cloneGitSource(sandbox: Sandbox, source: GitSource, log: JobLog, timeoutMs: number): Promise<Failure | null> {
  const shown = redactUrl(source.url);
  log.notice(`source: cloning ${shown} ${source.commit ? `at ${source.commit}` : `ref ${source.ref}`}`);
  const env: Record<string, string> = {
    DELTACI_GIT_URL: source.url, DELTACI_GIT_REF: source.ref, DELTACI_GIT_COMMIT: source.commit ?? "",
    GIT_TERMINAL_PROMPT: "0", HOME: sandbox.workspaceInSandbox,
  };
  let proc;
  try {
    proc = sandbox.start({ run: SCRIPT, shell: "sh -e", workingDirectory: null, timeoutMs, env });
  } catch (err) {
    return { reason: "source_error", step: null, message: `cannot clone ${shown}: ${(err as Error).message}` };
  }
  const out = log.stream();
  const scrub = (c: Buffer) => out.write(source.url === shown ? c : Buffer.from(c.toString("utf8").split(source.url).join(shown)));
  proc.stdout.on("data", scrub);
  proc.stderr.on("data", scrub);
  const ended = (s: NodeJS.ReadableStream) => new Promise<void>((resolve) => {
    s.once("end", resolve);
    s.once("close", resolve);
    s.once("error", () => resolve());
  });
  let res;
  try {
    [res] = await Promise.all([proc.done, ended(proc.stdout), ended(proc.stderr)]);
  } finally {
    out.end();
  }
  if (res.exitCode === 0) return null;
  const how = res.limit ? res.limit.message : res.signal ? `killed by ${res.signal}` : `git exited with ${res.exitCode}`;
  return { reason: "source_error", step: null, message: `cannot clone ${shown}: ${how}` };
}
