/**
 * The one error catalogue. Every error that crosses the HTTP boundary is a KilnError with a stable
 * SCREAMING_SNAKE code and an HTTP status; foreign errors are translated exactly once, at the edge
 * where they enter kiln. Messages say what to do next; 5xx messages never carry internals.
 */
export const ERROR_CATALOGUE = {
  INVALID_REQUEST: 400,
  UNKNOWN_PACK: 400,
  UNKNOWN_BACKEND: 400,
  BACKEND_UNAVAILABLE: 400,
  UNSUPPORTED_OPTION: 400,
  PATH_ESCAPE: 400,
  /** A file op met a directory where it needs a file (write over it, read it). */
  IS_A_DIRECTORY: 400,
  /** A file stands where a directory is needed (a parent of the path, the folder to list). */
  NOT_A_DIRECTORY: 400,
  /** The exec's cwd does not exist in the sandbox or is not a directory. */
  CWD_NOT_FOUND: 400,
  UNAUTHORIZED: 401,
  HOST_NOT_ALLOWED: 403,
  ORIGIN_NOT_ALLOWED: 403,
  ADMIN_REQUIRED: 403,
  /** The sandbox user may not do this (a root-owned or read-only path such as /usr). */
  PERMISSION_DENIED: 403,
  /** An API key asked for an admin route (keys). */
  FORBIDDEN: 403,
  /** A workspace path outside every root of KILN_WORKSPACE_ROOTS (symlinks resolved), or none allowed. */
  WORKSPACE_FORBIDDEN: 403,
  /** A network policy the operator does not allow (open, learn) or networking off on this service. */
  NETWORK_FORBIDDEN: 403,
  SANDBOX_NOT_FOUND: 404,
  SNAPSHOT_NOT_FOUND: 404,
  FILE_NOT_FOUND: 404,
  BUILD_NOT_FOUND: 404,
  NOT_FOUND: 404,
  /** The sandbox has no code context with this id (deleted, or the service restarted since). */
  CONTEXT_NOT_FOUND: 404,
  KEY_NOT_FOUND: 404,
  /** The sandbox has no workspace (it was created without `workspace`). */
  WORKSPACE_NOT_FOUND: 404,
  SANDBOX_NOT_READY: 409,
  SANDBOX_GONE: 409,
  /** Exec, files or pause on a paused sandbox: resume it first. */
  SANDBOX_PAUSED: 409,
  /** A named snapshot of that name exists already. */
  SNAPSHOT_EXISTS: 409,
  PACK_CONFLICT: 409,
  /** Approve met host files changed since the sandbox started (details.conflicts); retry with force. */
  WORKSPACE_CONFLICT: 409,
  /** Delete of a workspace sandbox with changes nobody approved or rejected; ?discard=true drops them. */
  WORKSPACE_PENDING: 409,
  PAYLOAD_TOO_LARGE: 413,
  PACK_BUILD_FAILED: 422,
  AT_CAPACITY: 429,
  /** A per-key limit (docs/store.md): details name the limit, its value and what was asked. */
  QUOTA_EXCEEDED: 429,
  QUEUE_TIMEOUT: 503,
  SHUTTING_DOWN: 503,
  IMAGE_MISSING: 503,
  /** No store (KILN_DATABASE_URL=off), or its schema is newer than this kiln. */
  STORE_UNAVAILABLE: 503,
  /** Sandbox networking could not be set up (no uplink, tools missing, addresses exhausted). */
  NETWORK_UNAVAILABLE: 503,
  BOOT_FAILED: 502,
  AGENT_ERROR: 502,
  AGENT_PROTOCOL: 502,
  /** Nothing listens on the port inside the sandbox that a proxy or tunnel asked for. */
  PORT_UNREACHABLE: 502,
  EXEC_FAILED: 400,
  TIMEOUT: 504,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface KilnErrorOptions {
  cause?: unknown;
  /** Extra machine-readable fields returned to the client (never secrets or host paths). */
  details?: Record<string, unknown>;
  /** Seconds, for 429/503: sent as Retry-After. */
  retryAfterSec?: number;
}

export class KilnError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: Record<string, unknown>;
  readonly retryAfterSec?: number;

  constructor(code: ErrorCode, message: string, options: KilnErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'KilnError';
    this.code = code;
    this.status = ERROR_CATALOGUE[code];
    this.details = options.details;
    this.retryAfterSec = options.retryAfterSec;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: this.details } : { code: this.code, message: this.message };
  }
}

export function isKilnError(e: unknown): e is KilnError {
  return e instanceof KilnError;
}

/** Wraps anything thrown by a dependency; KilnErrors pass through unchanged. */
export function toKilnError(e: unknown, fallback: ErrorCode = 'INTERNAL', context = 'internal error'): KilnError {
  if (e instanceof KilnError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new KilnError(fallback, `${context}: ${message}`, { cause: e });
}
