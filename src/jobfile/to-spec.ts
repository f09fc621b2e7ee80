/** A schema-valid job → the protocol's SubmittedJobSpec, with units parsed and defaults filled in. */
import { parseDurationMs, parseSizeBytes } from "../base/units.ts";
import { defaults } from "../config/defaults.ts";
import type { Image, Network, Step, SubmittedJobSpec } from "../protocol/schemas.ts";
import type { PathSegment } from "./locate.ts";
import type { ParsedJob } from "./parse.ts";
import { sourceToSpec, type RawSource } from "./source.ts";

type Scalar = string | number | boolean;
export interface RawStep {
  name?: string;
  run: string;
  env?: Record<string, Scalar>;
  timeout?: string;
  "working-directory"?: string;
  shell?: string;
}
export interface RawJob {
  "runs-on"?: string | string[] | { labels?: string[]; os?: string; arch?: string };
  image?: string;
  timeout?: string;
  resources?: { cpus?: number; memory?: string | number; disk?: string | number; pids?: number; log?: string | number };
  network?: "none" | { allow: string[]; transparent?: boolean };
  source?: RawSource;
  env?: Record<string, Scalar>;
  secrets?: string[];
  cache?: Array<{ key: string; path: string; "read-only"?: boolean }>;
  steps: RawStep[];
  artifacts?: Array<{ name: string; path: string | string[]; when?: "on_success" | "always"; report?: "junit" }>;
}

export interface ConvertIssue {
  path: PathSegment[];
  message: string;
}

const MiB = 1024 * 1024;
/** Scope of caches declared in a job file; the control plane may narrow it (fork jobs). */
export const DEFAULT_CACHE_SCOPE = "default";

export function jobToSpec(name: string, raw: RawJob): { job: ParsedJob | null; issues: ConvertIssue[] } {
  const issues: ConvertIssue[] = [];
  const duration = (text: string | undefined, fallback: number, path: PathSegment[]): number => {
    if (text === undefined) return fallback;
    try {
      const ms = parseDurationMs(text);
      if (ms >= 1) return ms;
      issues.push({ path, message: `expected a duration of at least 1ms, got "${text}"` });
    } catch (err) {
      issues.push({ path, message: (err as Error).message });
    }
    return fallback;
  };
  const sizeMiB = (text: string | number | undefined, fallback: number, min: number, path: PathSegment[]): number => {
    if (text === undefined) return fallback;
    try {
      const mib = Math.ceil(parseSizeBytes(text) / MiB);
      if (mib >= min) return mib;
      issues.push({ path, message: `expected at least ${min}Mi, got ${JSON.stringify(text)}` });
    } catch (err) {
      issues.push({ path, message: (err as Error).message });
    }
    return fallback;
  };

  const steps: Step[] = raw.steps.map((s, i) => {
    const step: Step = { name: s.name ?? defaultStepName(s.run, i), run: s.run };
    if (s.shell !== undefined) step.shell = s.shell;
    if (s.env !== undefined) step.env = stringifyEnv(s.env);
    if (s.timeout !== undefined) step.timeoutMs = duration(s.timeout, defaults.stepTimeoutMs, ["steps", i, "timeout"]);
    if (s["working-directory"] !== undefined) {
      const wd = s["working-directory"];
      if (wd.startsWith("/") || wd.split("/").includes("..")) issues.push({ path: ["steps", i, "working-directory"], message: `expected a path inside the workspace (relative, no ".."), got "${wd}"` });
      step.workingDirectory = wd;
    }
    return step;
  });

  const res = raw.resources ?? {};
  const net = network(raw.network);
  let source: SubmittedJobSpec["source"] = { kind: "none" }; // filled in by the submitting command unless the file names a git source
  if (raw.source !== undefined) {
    const s = sourceToSpec(raw.source, net);
    issues.push(...s.issues);
    if (s.source) source = s.source;
  }
  const spec: SubmittedJobSpec = {
    name,
    runsOn: runsOn(raw["runs-on"]),
    image: image(raw.image),
    steps,
    env: stringifyEnv(raw.env ?? {}),
    limits: {
      timeoutMs: duration(raw.timeout, defaults.jobTimeoutMs, ["timeout"]),
      cpus: res.cpus ?? defaults.cpus,
      memoryMiB: sizeMiB(res.memory, defaults.memoryMiB, 4, ["resources", "memory"]),
      diskMiB: sizeMiB(res.disk, defaults.diskMiB, 1, ["resources", "disk"]),
      pids: res.pids ?? defaults.pids,
      logMiB: sizeMiB(res.log, defaults.logMiB, 1, ["resources", "log"]),
    },
    network: net,
    source,
    caches: (raw.cache ?? []).map((c) => ({ key: c.key, path: c.path, scope: DEFAULT_CACHE_SCOPE, readOnly: c["read-only"] ?? false })),
    artifacts: (raw.artifacts ?? []).map((a) => ({
      name: a.name, paths: typeof a.path === "string" ? [a.path] : a.path,
      // A test report matters most when the tests fail: kept on failure unless the file says otherwise.
      when: a.when ?? (a.report !== undefined ? "always" : "on_success"),
      ...(a.report !== undefined ? { report: a.report } : {}),
    })),
  };
  const artifactNames = new Set<string>();
  (raw.artifacts ?? []).forEach((a, i) => {
    if (artifactNames.has(a.name)) issues.push({ path: ["artifacts", i, "name"], message: `duplicate artifact name "${a.name}"` });
    artifactNames.add(a.name);
  });
  const stepNames = new Set<string>();
  raw.steps.forEach((s, i) => {
    if (s.name !== undefined && stepNames.has(s.name)) issues.push({ path: ["steps", i, "name"], message: `duplicate step name "${s.name}"` });
    if (s.name !== undefined) stepNames.add(s.name);
  });
  if (issues.length > 0) return { job: null, issues };
  return { job: { name, spec, secrets: [...(raw.secrets ?? [])] }, issues };
}

function defaultStepName(run: string, index: number): string {
  const first = run.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? `step ${index + 1}`;
  return first.length > 60 ? `${first.slice(0, 59)}…` : first;
}

function stringifyEnv(env: Record<string, Scalar>): Record<string, string> {
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

function runsOn(v: RawJob["runs-on"]): SubmittedJobSpec["runsOn"] {
  if (v === undefined) return { labels: [] };
  if (typeof v === "string") return { labels: [v] };
  if (Array.isArray(v)) return { labels: [...v] };
  const out: SubmittedJobSpec["runsOn"] = { labels: [...(v.labels ?? [])] };
  if (v.os !== undefined) out.os = v.os;
  if (v.arch !== undefined) out.arch = v.arch;
  return out;
}

/** `host`, or `REF@sha256:HEX` (REF is a registry reference or an OCI layout path, see docs/job-file.md). */
function image(v: string | undefined): Image {
  if (v === undefined || v === "host") return { kind: "host" };
  const at = v.lastIndexOf("@sha256:");
  return { kind: "oci", ref: v.slice(0, at), digest: v.slice(at + 1) };
}

function network(v: RawJob["network"]): Network {
  if (v === undefined || v === "none") return { egress: "none" };
  return { egress: "allowlist", allow: [...v.allow], ...(v.transparent === true ? { transparent: true } : {}) };
}
