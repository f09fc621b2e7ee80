/** What the runner engine needs from its collaborators (owned here; STYLE.md 7). */
import type {
  ArtifactCreateRequest, ArtifactCreateResponse, Capabilities, CompleteRequest, HeartbeatRequest,
  HeartbeatResponse, Lease, RegisterRequest, RegisterResponse,
} from "../protocol/schemas.ts";
import type { RetryOptions } from "../client/retry-policy.ts";

export type CompleteResult = { status: "accepted" } | { status: "log_incomplete"; committed: number };
export type UploadTarget = NonNullable<ArtifactCreateResponse["upload"]>;

/** The runner protocol as the engine sees it; `RunnerClient` implements it over HTTP. */
export interface RunnerProtocol {
  register(registrationToken: string, body: RegisterRequest, opts?: RetryOptions): Promise<RegisterResponse>;
  lease(sessionToken: string, waitMs: number, opts?: RetryOptions): Promise<Lease | null>;
  heartbeat(leaseToken: string, body: HeartbeatRequest, opts?: RetryOptions): Promise<HeartbeatResponse>;
  putLog(leaseToken: string, start: number, bytes: Uint8Array, opts?: RetryOptions): Promise<{ status: "accepted" | "gap"; committed: number }>;
  createArtifact(leaseToken: string, body: ArtifactCreateRequest, opts?: RetryOptions): Promise<ArtifactCreateResponse>;
  uploadArtifact(leaseToken: string, target: UploadTarget, file: string, size: number, opts?: RetryOptions): Promise<void>;
  downloadSource(leaseToken: string, dest: string, opts?: RetryOptions): Promise<void>;
  complete(leaseToken: string, body: CompleteRequest, opts?: RetryOptions): Promise<CompleteResult>;
  cancelAck(leaseToken: string, body: CompleteRequest, opts?: RetryOptions): Promise<CompleteResult>;
  /** Drops every connection at once. */
  destroy(): Promise<void>;
}

/** pino-compatible. */
export interface RunnerLogger {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export const nullLogger: RunnerLogger = { info: () => {}, warn: () => {}, error: () => {} };

export type { Capabilities };
