/**
 * Wire types of runner protocol v1 (PROTOCOL.md) as TypeBox schemas: one source for the
 * server's validation, the client's types and the CLI. Objects reject unknown fields.
 */
import { Type, type Static, type TSchema, type TProperties, type ObjectOptions } from "@sinclair/typebox";
import { REPORT_FORMATS, type TestReport } from "./test-report.ts";

const Obj = <T extends TProperties>(props: T, opts: ObjectOptions = {}) => Type.Object(props, { additionalProperties: false, ...opts });
const Str = (maxLength = 256, minLength = 0) => Type.String({ maxLength, minLength });
const Int = (minimum = 0, maximum = Number.MAX_SAFE_INTEGER) => Type.Integer({ minimum, maximum });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
/** Names to values (env, secrets): a value cannot carry a NUL byte, which no process environment can hold. */
const StrMap = (maxProperties = 256, valueMax = 65_536) =>
  Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]{0,127}$" }), Type.String({ maxLength: valueMax, pattern: "^[^\\u0000]*$" }), { maxProperties });

export const Label = Type.String({ pattern: "^[A-Za-z0-9._:/=-]{1,64}$" });
export const ArtifactName = Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" });
export const Sha256 = Type.String({ pattern: "^[a-f0-9]{64}$" });
export const Labels = Type.Array(Label, { maxItems: 64 });

export const Resources = Obj({ cpus: Type.Number({ minimum: 0, maximum: 1024 }), memoryMiB: Int(0, 1 << 24), diskMiB: Int(0, 1 << 30) });
export type Resources = Static<typeof Resources>;

export const Capabilities = Obj({
  os: Str(32, 1),
  arch: Str(32, 1),
  labels: Labels,
  toolchains: Type.Record(Type.String({ maxLength: 64 }), Str(128), { maxProperties: 64 }),
  resources: Resources,
  isolation: Type.Array(Type.Union([Type.Literal("oci"), Type.Literal("process"), Type.Literal("microvm")]), { maxItems: 4 }),
});
export type Capabilities = Static<typeof Capabilities>;

export const Image = Type.Union([
  Obj({ kind: Type.Literal("host") }),
  Obj({ kind: Type.Literal("oci"), ref: Str(512, 1), digest: Type.String({ pattern: "^sha256:[a-f0-9]{64}$" }) }),
]);
export type Image = Static<typeof Image>;

export const Step = Obj({
  name: Str(256, 1),
  run: Str(1 << 18, 1),
  shell: Type.Optional(Str(256, 1)),
  env: Type.Optional(StrMap()),
  timeoutMs: Type.Optional(Int(1)),
  workingDirectory: Type.Optional(Str(1024)),
});
export type Step = Static<typeof Step>;

export const Limits = Obj({
  timeoutMs: Int(1),
  cpus: Type.Number({ minimum: 0.01, maximum: 1024 }),
  memoryMiB: Int(4, 1 << 24),
  diskMiB: Int(1, 1 << 30),
  pids: Int(1, 1 << 22),
  logMiB: Int(1, 1 << 16),
});
export type Limits = Static<typeof Limits>;

export const Network = Type.Union([
  Obj({ egress: Type.Literal("none") }),
  Obj({
    egress: Type.Literal("allowlist"),
    allow: Type.Array(Type.String({ pattern: "^(\\*\\.)?[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$" }), { maxItems: 128 }),
    /** Also redirect the job's other TCP (clients that ignore HTTP(S)_PROXY) through the same allowlist (docs/sandbox.md). */
    transparent: Type.Optional(Type.Boolean()),
  }),
]);
export type Network = Static<typeof Network>;

/**
 * The label a runner advertises when its sandbox can apply `network.transparent`; a job that asks
 * for it requires the label (server matching), so a runner that predates it never leases the job.
 */
export const TRANSPARENT_EGRESS_LABEL = "deltaci:transparent-egress";

/** A runner's labels with those its isolation brings (`oci` applies transparent egress). */
export function withIsolationLabels(labels: readonly string[], isolation: string): string[] {
  return isolation === "oci" && !labels.includes(TRANSPARENT_EGRESS_LABEL) ? [...labels, TRANSPARENT_EGRESS_LABEL] : [...labels];
}

export const Source = Type.Union([
  Obj({ kind: Type.Literal("none") }),
  Obj({ kind: Type.Literal("archive"), sha256: Sha256 }),
  Obj({ kind: Type.Literal("git"), url: Str(2048, 1), ref: Str(256, 1), commit: Type.Optional(Type.String({ pattern: "^[a-f0-9]{7,64}$" })) }),
]);
export type Source = Static<typeof Source>;

export const Cache = Obj({
  key: Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" }),
  path: Str(1024, 1),
  scope: Str(128, 1),
  readOnly: Type.Boolean(),
});
export type Cache = Static<typeof Cache>;

export const ArtifactRule = Obj({
  name: ArtifactName,
  paths: Type.Array(Str(1024, 1), { minItems: 1, maxItems: 64 }),
  when: Type.Union([Type.Literal("on_success"), Type.Literal("always")]),
  /** The artifact is a test report the server parses (src/protocol/test-report.ts). */
  report: Type.Optional(Type.Union(REPORT_FORMATS.map((f) => Type.Literal(f)))),
});
export type ArtifactRule = Static<typeof ArtifactRule>;

const jobSpecProps = {
  name: Type.String({ pattern: "^[A-Za-z0-9._-]{1,128}$" }),
  runsOn: Obj({ labels: Labels, os: Type.Optional(Str(32, 1)), arch: Type.Optional(Str(32, 1)) }),
  image: Image,
  steps: Type.Array(Step, { minItems: 1, maxItems: 256 }),
  env: StrMap(),
  limits: Limits,
  network: Network,
  source: Source,
  caches: Type.Array(Cache, { maxItems: 32 }),
  artifacts: Type.Array(ArtifactRule, { maxItems: 64 }),
};

/** What the job API accepts: a JobSpec without `secrets`. */
export const SubmittedJobSpec = Obj(jobSpecProps);
export type SubmittedJobSpec = Static<typeof SubmittedJobSpec>;
/** What a runner receives in its lease. */
export const JobSpec = Obj({ ...jobSpecProps, secrets: StrMap(128) });
export type JobSpec = Static<typeof JobSpec>;

// ---- runner endpoints ----
export const RegisterRequest = Obj({ name: Str(128, 1), version: Str(64, 1), capabilities: Capabilities });
export type RegisterRequest = Static<typeof RegisterRequest>;
export const RegisterResponse = Obj({ runnerId: Str(), sessionToken: Str(), sessionExpiresAt: Str(), leaseWaitMs: Int() });
export type RegisterResponse = Static<typeof RegisterResponse>;

export const LeaseRequest = Obj({ waitMs: Int(0, 60_000) });
export type LeaseRequest = Static<typeof LeaseRequest>;
export const Lease = Obj({
  leaseId: Str(), leaseToken: Str(), jobId: Str(), runId: Str(), attempt: Int(1),
  expiresAt: Str(), ttlMs: Int(), heartbeatIntervalMs: Int(), job: JobSpec,
});
export type Lease = Static<typeof Lease>;
export const LeaseResponse = Obj({ lease: Lease });
export type LeaseResponse = Static<typeof LeaseResponse>;

export const CancelMode = Type.Union([Type.Literal("none"), Type.Literal("graceful"), Type.Literal("hard")]);
export type CancelMode = Static<typeof CancelMode>;
export const HeartbeatRequest = Obj({
  state: Type.Union([Type.Literal("preparing"), Type.Literal("running"), Type.Literal("finishing")]),
  step: Nullable(Int(0, 10_000)),
  logBytes: Int(),
  waitMs: Type.Optional(Int(0, 60_000)),
});
export type HeartbeatRequest = Static<typeof HeartbeatRequest>;
export const HeartbeatResponse = Obj({ expiresAt: Str(), heartbeatIntervalMs: Int(), cancel: CancelMode });
export type HeartbeatResponse = Static<typeof HeartbeatResponse>;

export const LogResponse = Obj({ committed: Int() });
export type LogResponse = Static<typeof LogResponse>;

/** `path`: a single file's relative path in the workspace (artifact-path.ts); absent for a tar of several files. */
export const ArtifactCreateRequest = Obj({
  name: ArtifactName, size: Int(0), sha256: Sha256, mediaType: Type.Optional(Type.String({ pattern: "^[\\w.+-]{1,64}/[\\w.+-]{1,64}$" })),
  path: Type.Optional(Str(1024, 1)),
});
export type ArtifactCreateRequest = Static<typeof ArtifactCreateRequest>;
/** One byte range of a direct multipart upload: PUT bytes [offset, offset + size) to `url` (absolute, presigned). */
export const UploadPart = Obj({ partNumber: Int(1, 10_000), offset: Int(), size: Int(), url: Str(8192) });
/**
 * How to send an upload's bytes. Without `parts`: one `method` request to `url` (relative: the
 * server, with the token; absolute: presigned, without it) with `headers`. With `parts`: one PUT
 * per part instead. With `commitUrl`: POST it (token) once the bytes are sent.
 */
export const ArtifactUpload = Obj({
  url: Str(8192), method: Str(16), headers: Type.Record(Type.String(), Type.String()),
  commitUrl: Type.Optional(Str(2048)), parts: Type.Optional(Type.Array(UploadPart, { maxItems: 10_000 })),
});
export type ArtifactUpload = Static<typeof ArtifactUpload>;
export const ArtifactCreateResponse = Obj({ artifactId: Str(), upload: Nullable(ArtifactUpload) });
/** `POST /v1/sources/uploads`: declare a source archive; `upload: null` when the store holds it already. */
export const SourceUploadRequest = Obj({ sha256: Sha256, size: Int() });
export type SourceUploadRequest = Static<typeof SourceUploadRequest>;
export const SourceUploadPlan = Obj({ sha256: Sha256, size: Int(), upload: Nullable(ArtifactUpload) });
export type SourceUploadPlan = Static<typeof SourceUploadPlan>;
export type ArtifactCreateResponse = Static<typeof ArtifactCreateResponse>;

export const FailureReason = Type.Union(
  ["step_failed", "timeout", "memory_limit", "pids_limit", "disk_quota", "log_limit", "sandbox_error", "source_error", "runner_error"].map((r) => Type.Literal(r)),
);
export type FailureReason = "step_failed" | "timeout" | "memory_limit" | "pids_limit" | "disk_quota" | "log_limit" | "sandbox_error" | "source_error" | "runner_error";
export const Failure = Obj({ reason: FailureReason, step: Nullable(Int(0, 10_000)), message: Str(4096) });
export type Failure = { reason: FailureReason; step: number | null; message: string };
export const StepReport = Obj({
  name: Str(256), exitCode: Nullable(Type.Integer()), signal: Nullable(Str(16)),
  startedAt: Nullable(Str(64)), finishedAt: Nullable(Str(64)),
});
export type StepReport = Static<typeof StepReport>;
export const CompleteRequest = Obj({
  result: Type.Union([Type.Literal("succeeded"), Type.Literal("failed"), Type.Literal("error")]),
  exitCode: Nullable(Type.Integer()),
  failure: Nullable(Failure),
  steps: Type.Array(StepReport, { maxItems: 256 }),
  artifacts: Type.Array(Str(128), { maxItems: 256 }),
  log: Obj({ bytes: Int(), sha256: Sha256 }),
});
export type CompleteRequest = Omit<Static<typeof CompleteRequest>, "failure"> & { failure: Failure | null };

// ---- controller endpoints ----
export const RequirementSet = Obj({ os: Nullable(Str(32)), arch: Nullable(Str(32)), labels: Labels, resources: Resources });
export type RequirementSet = Static<typeof RequirementSet>;
export const DemandResponse = Obj({
  demand: Type.Array(Obj({ requirements: RequirementSet, queued: Int(), running: Int(), unschedulable: Type.Optional(Int()) })),
  /** Changes whenever demand may have changed; pass as `since` to long-poll (`GET /v1/controller/demand?since=V&waitMs=N`). */
  version: Type.Optional(Int()),
});
export type DemandResponse = Static<typeof DemandResponse>;
export const RegistrationsRequest = Obj({ count: Int(1, 256), labels: Labels, ttlMs: Type.Optional(Int(1000, 24 * 3_600_000)) });
export type RegistrationsRequest = Static<typeof RegistrationsRequest>;
export const RegistrationsResponse = Obj({ tokens: Type.Array(Str()) });
/** `PUT /v1/controller/capacity`: the pools a controller can provision; used to flag unschedulable jobs. */
/** `minIdle`: runners the controller keeps started and waiting (informational: the fleet page shows it). */
export const CapacityPool = Obj({
  name: Str(128, 1), os: Str(32, 1), arch: Str(32, 1), labels: Labels, resources: Resources, max: Int(0, 1_000_000), minIdle: Type.Optional(Int(0, 1_000_000)),
});
export type CapacityPool = Static<typeof CapacityPool>;
export const CapacityRequest = Obj({ pools: Type.Array(CapacityPool, { maxItems: 256 }) });
export type CapacityRequest = Static<typeof CapacityRequest>;

// ---- job API ----
export const SubmitJobRequest = Obj({ spec: SubmittedJobSpec, fork: Type.Boolean(), secrets: Type.Optional(StrMap(128)) });
export type SubmitJobRequest = Static<typeof SubmitJobRequest>;
export const SubmitJobResponse = Obj({ jobId: Str(), runId: Str() });
export type SubmitJobResponse = Static<typeof SubmitJobResponse>;
/** `POST /v1/jobs/:id/cancel` (body optional; default graceful). */
export const CancelJobRequest = Obj({ mode: Type.Optional(Type.Union([Type.Literal("graceful"), Type.Literal("hard")])) });
export type CancelJobRequest = Static<typeof CancelJobRequest>;
/** `POST /v1/sources` answer: the archive's digest in the store. */
export const SourceUploadResponse = Obj({ sha256: Sha256, size: Int() });
export type SourceUploadResponse = Static<typeof SourceUploadResponse>;

export type JobState = "queued" | "leased" | "running" | "canceling" | "succeeded" | "failed" | "errored" | "canceled";
export type AttemptState = "queued" | "leased" | "running" | "canceling" | "succeeded" | "failed" | "errored" | "canceled" | "lost";
export const TERMINAL_JOB_STATES: readonly JobState[] = ["succeeded", "failed", "errored", "canceled"];

/** `GET /v1/jobs/:id`. Secrets never appear here. */
export interface JobStatus {
  jobId: string;
  runId: string;
  name: string;
  state: JobState;
  fork: boolean;
  createdAt: string;
  finishedAt: string | null;
  unschedulable: string | null;
  failure: { reason: string; step: number | null; message: string } | null;
  attempts: Array<{ attempt: number; state: AttemptState; runnerId: string | null; startedAt: string | null; finishedAt: string | null; reason: string | null }>;
  steps: StepReport[];
  /** `path`: the single file's relative path in the workspace (null for a tar, or from older runners). */
  artifacts: Array<{ artifactId: string; name: string; size: number; sha256: string; mediaType: string; path: string | null }>;
  log: { bytes: number; truncated: boolean };
  /** `GET /v1/jobs/:id` only: summaries of the artifacts declared as test reports (docs/job-file.md). */
  testReports?: TestReport[];
  transitions: Array<{ at: string; attempt: number | null; from: string; to: string; reason: string }>;
}

export const ErrorBody = Obj({ error: Obj({ code: Str(64), message: Str(4096), committed: Type.Optional(Int()) }) });
