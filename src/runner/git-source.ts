/**
 * Clones a job's git source into the empty workspace inside the sandbox, as the job's user and
 * through the job's network policy (git takes the egress proxy from the sandbox env). URL, ref and
 * commit reach the script through env vars, never interpolated into shell. Output goes to the job
 * log; the URL is printed without its userinfo.
 *
 * ref "HEAD" is the remote's default branch (a plain clone). With a commit, the job checks out
 * exactly that commit, and only if it is reachable from the ref's tip (the ref may have moved on
 * since the job was submitted, so the tip itself is not required to match): a commit on another
 * branch, or on none, fails the job with source_error.
 */
import type { JobLog } from "../logs/job-log.ts";
import type { Failure } from "../protocol/schemas.ts";
import type { Sandbox } from "../sandbox/types.ts";

export interface GitSource { url: string; ref: string; commit?: string | null | undefined }

/** The ref that names the remote's default branch. */
export const DEFAULT_GIT_REF = "HEAD";

/** The script's own exit codes (git itself exits 1 or 128). */
const NO_SUCH_COMMIT = 90;
const NOT_ON_REF = 91;

const SCRIPT = `set -e
set -- --quiet
[ "$DELTACI_GIT_REF" = ${DEFAULT_GIT_REF} ] || set -- "$@" --branch "$DELTACI_GIT_REF"
[ -z "$DELTACI_GIT_COMMIT" ] || set -- "$@" --no-checkout
git clone "$@" -- "$DELTACI_GIT_URL" .
if [ -n "$DELTACI_GIT_COMMIT" ]; then
  tip=$(git rev-parse --verify HEAD)
  git cat-file -e "$DELTACI_GIT_COMMIT^{commit}" 2>/dev/null || git fetch --quiet origin "$DELTACI_GIT_COMMIT" || exit ${NO_SUCH_COMMIT}
  rc=0
  git merge-base --is-ancestor "$DELTACI_GIT_COMMIT" "$tip" || rc=$?
  if [ "$rc" = 1 ]; then
    echo "commit $DELTACI_GIT_COMMIT is not on ref $DELTACI_GIT_REF (its tip is $tip)" >&2
    exit ${NOT_ON_REF}
  fi
  [ "$rc" = 0 ] || exit "$rc"
  git checkout --quiet --detach "$DELTACI_GIT_COMMIT"
fi
git -c core.pager=cat log -1 --format='checked out %H'
`;

/** How the log and messages name the ref. */
const refText = (ref: string) => ref === DEFAULT_GIT_REF ? `${DEFAULT_GIT_REF} (the default branch)` : ref;

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
  log.notice(`source: cloning ${shown} ref ${refText(source.ref)}${source.commit ? ` at ${source.commit}` : ""}`);
  const env: Record<string, string> = {
    DELTACI_GIT_URL: source.url, DELTACI_GIT_REF: source.ref, DELTACI_GIT_COMMIT: source.commit ?? "",
    GIT_TERMINAL_PROMPT: "0", HOME: sandbox.workspaceInSandbox,
  };
  const out = log.stream();
  const scrub = (c: Buffer) => out.write(source.url === shown ? c : Buffer.from(c.toString("utf8").split(source.url).join(shown)));
  let proc;
  try {
    proc = sandbox.start({ run: SCRIPT, shell: "sh -e", workingDirectory: null, timeoutMs, env }, { stdout: scrub, stderr: scrub });
  } catch (err) {
    out.end();
    return { reason: "source_error", step: null, message: `cannot clone ${shown}: ${(err as Error).message}` };
  }
  let res;
  try {
    res = await proc.done;
  } finally {
    out.end();
  }
  if (res.exitCode === 0) return null;
  if (res.exitCode === NOT_ON_REF && !res.limit) {
    return { reason: "source_error", step: null, message: `commit ${source.commit ?? ""} is not on ref ${refText(source.ref)} of ${shown} (not reachable from its tip)` };
  }
  if (res.exitCode === NO_SUCH_COMMIT && !res.limit) {
    return { reason: "source_error", step: null, message: `cannot clone ${shown}: no commit ${source.commit ?? ""} in the repository` };
  }
  const how = res.limit ? res.limit.message : res.signal ? `killed by ${res.signal}` : `git exited with ${res.exitCode}`;
  return { reason: "source_error", step: null, message: `cannot clone ${shown}: ${how}` };
}
