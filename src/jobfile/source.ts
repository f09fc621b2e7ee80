/**
 * A job file's `source: {git, ref?, commit?}` → the protocol's git Source, with the checks the
 * schema cannot express: a URL the runner can clone through the egress proxy (http/https, no
 * credentials), a ref that `git clone --branch` takes (or HEAD, the default: the remote's default
 * branch), and a git host on the job's allowlist.
 */
import type { Network, Source } from "../protocol/schemas.ts";
import type { PathSegment } from "./locate.ts";

export interface RawSource {
  git: string;
  ref?: string;
  commit?: string;
}

export interface SourceIssue {
  path: PathSegment[];
  message: string;
}

/** Where git connects for `url`: the host (lowercase, no brackets) and port (the scheme's default when absent). */
export function gitHostPort(url: URL): { host: string; port: number } {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "").replace(/\.$/, "");
  return { host, port: url.port ? Number(url.port) : url.protocol === "https:" ? 443 : 80 };
}

/**
 * The allowlist pattern covering host:port, or null. The same rule as the egress proxy's
 * (`host[:port]`, `*.domain[:port]` = any subdomain, not the apex; no port = any port); a test
 * checks the two agree.
 */
export function allowlistCovers(allow: readonly string[], host: string, port: number): string | null {
  for (const pattern of allow) {
    const colon = pattern.lastIndexOf(":");
    const name = (colon >= 0 ? pattern.slice(0, colon) : pattern).toLowerCase();
    if (colon >= 0 && Number(pattern.slice(colon + 1)) !== port) continue;
    const covered = name.startsWith("*.") ? host.length > name.length - 1 && host.endsWith(name.slice(1)) : host === name;
    if (covered) return pattern;
  }
  return null;
}

/** The ref of a source without `ref:`: the remote's default branch (the runner clones without --branch). */
export const DEFAULT_REF = "HEAD";

/** Why `ref` is neither HEAD nor a branch or tag name `git clone --branch` accepts (git check-ref-format rules), or null. */
export function refProblem(ref: string): string | null {
  if (ref === DEFAULT_REF) return null;
  if (ref === "@") return `"@" is not a branch or tag name; write HEAD (or leave ref out) for the default branch, or name the branch, e.g. main`;
  if (ref.startsWith("refs/")) return `expected a short branch or tag name (e.g. main or v1.2.0), not a full ref: write "${ref.replace(/^refs\/(heads|tags)\//, "")}"`;
  if (ref.startsWith("-")) return `a branch or tag name cannot start with "-"`;
  if ([...ref].some((c) => c.charCodeAt(0) <= 0x20 || c.charCodeAt(0) === 0x7f)) return `a branch or tag name cannot contain spaces or control characters`;
  const bad = /[~^:?*[\\]/.exec(ref);
  if (bad) return `a branch or tag name cannot contain "${bad[0]}"`;
  if (ref.includes("..")) return `a branch or tag name cannot contain ".."`;
  if (ref.includes("@{")) return `a branch or tag name cannot contain "@{"`;
  if (ref.endsWith("/") || ref.startsWith("/") || ref.includes("//")) return `a branch or tag name cannot begin or end with "/" or contain "//"`;
  if (ref.endsWith(".")) return `a branch or tag name cannot end with "."`;
  for (const part of ref.split("/")) {
    if (part.startsWith(".")) return `a part of a branch or tag name cannot start with "." ("${part}")`;
    if (part.endsWith(".lock")) return `a part of a branch or tag name cannot end with ".lock" ("${part}")`;
  }
  return null;
}

/** The git URL's problem, or the parsed URL (the schema already checked the http(s) scheme). */
function parseGitUrl(text: string): { url: URL } | { problem: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { problem: `invalid URL "${text}": expected the repository's http(s) URL, e.g. https://git.example.org/team/app.git` };
  }
  if (url.username !== "" || url.password !== "") {
    return {
      problem: `credentials in the URL are not allowed ("${url.username ? "user" : ""}${url.password ? ":***" : ""}@"): a job file is read by everyone who reads the repository. ` +
        `Clone a private repository in a step instead, with a secret (secrets: [GIT_TOKEN], then git clone https://x-access-token:$GIT_TOKEN@${url.host}${url.pathname})`,
    };
  }
  if (url.hostname === "") return { problem: `the URL "${text}" has no host` };
  if (url.search !== "" || url.hash !== "") return { problem: `a git URL has no ?query or #fragment, got "${text}"` };
  return { url };
}

/** The protocol's git Source for a valid `source:` entry; issues otherwise (paths relative to the job). */
export function sourceToSpec(raw: RawSource, network: Network): { source: Source | null; issues: SourceIssue[] } {
  const issues: SourceIssue[] = [];
  const parsed = parseGitUrl(raw.git);
  if ("problem" in parsed) {
    issues.push({ path: ["source", "git"], message: parsed.problem });
  } else {
    const { host, port } = gitHostPort(parsed.url);
    const allow = network.egress === "allowlist" ? network.allow : [];
    if (allowlistCovers(allow, host, port) === null) {
      const where = network.egress === "none" ? `this job's network is "none"` : `no entry of network.allow covers it`;
      const fix = host.includes(":") ? `use a host name (an IPv6 address cannot be on the allowlist)` : `add it: network: {allow: ["${host}:${port}"${allow.length > 0 ? ", …" : ""}]}`;
      issues.push({ path: ["source", "git"], message: `the git host ${host}:${port} is not on the job's network allowlist (${where}): the clone runs inside the sandbox, through the job's egress policy; ${fix}` });
    }
  }
  const ref = raw.ref ?? DEFAULT_REF;
  const refIssue = refProblem(ref);
  if (refIssue) issues.push({ path: ["source", "ref"], message: `invalid ref "${ref}": ${refIssue}` });
  if (issues.length > 0) return { source: null, issues };
  const source: Source = { kind: "git", url: raw.git, ref };
  if (raw.commit !== undefined) source.commit = raw.commit.toLowerCase();
  return { source, issues };
}
