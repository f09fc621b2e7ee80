/** Stable error codes shared by the server, the client and the CLI. One table: docs/protocol.md lists them. */
export const ErrorCodes = {
  E_INVALID: 400,
  E_UNAUTHORIZED: 401,
  E_TOKEN_INVALID: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  E_SESSION_USED: 409,
  E_LEASE_STALE: 409,
  E_CONFLICT: 409,
  E_LOG_INCOMPLETE: 412,
  E_TOO_LARGE: 413,
  E_MEDIA_TYPE: 415,
  E_LOG_LIMIT: 413,
  E_RANGE: 416,
  E_DIGEST_MISMATCH: 422,
  E_UNAVAILABLE: 503,
  E_INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

/** A thrown error with a stable code and an optional cause; map to HTTP with `ErrorCodes[code]`. */
export class DeltaError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: string, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DeltaError";
    this.code = code;
    this.details = options?.details;
  }
}

export function isDeltaError(err: unknown, code?: string): err is DeltaError {
  return err instanceof DeltaError && (code === undefined || err.code === code);
}
