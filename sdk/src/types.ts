/**
 * Public API shapes. Request and response bodies come from the server's schemas (generated.ts, by
 * scripts/gen-sdk-types.ts); the rest are written here and checked against the server's types by
 * test/unit/sdk-generated.test.ts. Deliberately standalone: the SDK imports no server code, and the
 * dashboard typechecks it for browsers.
 */
import type { BackendName, CreateSandboxRequest, ErrorCode, ExecRequest, ExecResult, RunRequest } from './generated.js';
import type { WorkspaceOptions } from './workspace.js';

export type {
  ApiErrorBody, BackendName, CodeContext, CreateContextRequest, ErrorCode, ExecResult, NetworkEvent, NetworkEvents, PauseResult, PortLink, PortLinkRequest, RunCodeRequest, RunResult, SandboxInfo, SnapshotInfo,
} from './generated.js';

/**
 * The events of POST /v1/sandboxes/{id}/contexts/{ctx}/run, in order: started, then output,
 * results and an exception as they come, then end (or a kiln error).
 */
export type CodeEvent =
  | { type: 'started'; executionCount: number }
  | { type: 'stdout' | 'stderr'; text: string; timestamp: string }
  /** A MIME bundle ('text/plain', 'text/html', 'image/png' in base64, …); the main result is the last expression's value. */
  | { type: 'result'; isMainResult: boolean; data: Record<string, unknown> }
  | { type: 'exception'; name: string; value: string; traceback: string }
  | { type: 'end'; executionCount: number | null; timedOut: boolean; durationMs: number }
  | { type: 'error'; code: ErrorCode; message: string };

/** `workspace` is hand-written (workspace.ts) until the server's schema has it. */
export type CreateSandboxOptions = CreateSandboxRequest & { workspace?: WorkspaceOptions };
/** `stream` is chosen by the method: exec() answers once, execStream() yields events. */
export type ExecOptions = Omit<ExecRequest, 'stream'>;
/** `stream` is chosen by the method: run() answers once, runStream() yields events. */
export type RunOptions = Omit<RunRequest, 'stream'>;
export type ExecUsage = ExecResult['usage'];
/** "base64" for byte-exact output (binary programs); "utf8" text is the default. */
export type OutputEncoding = NonNullable<ExecRequest['encoding']>;

export type ExecEvent =
  | { type: 'started'; pid: number }
  | { type: 'stdout' | 'stderr'; data: string; encoding: OutputEncoding }
  /** Bytes were dropped from the middle of `stream`: what follows on it is its tail. */
  | { type: 'truncated'; stream: 'stdout' | 'stderr'; droppedBytes: number }
  | ({ type: 'result' } & Omit<ExecResult, 'stdout' | 'stderr'> & { sandboxId?: string; createMs?: number })
  | { type: 'error'; code: ErrorCode; message: string };

export interface PackInfo {
  name: string;
  description: string;
  imageReady: boolean;
  imageHash?: string;
  imageSizeBytes?: number;
  run: { fileName: string; command: string[]; projectCommand: string[] };
  env?: Record<string, string>;
  source?: 'builtin' | 'custom';
  /** Custom packs: the pack it was made from and its version. */
  base?: string;
  version?: number;
  /** Debian packages the definition asks for, and (once built) their versions. */
  packages?: string[];
  packageVersions?: Record<string, string>;
  /** From the built image, e.g. "Python 3.11.2". */
  languageVersion?: string;
  /** Which common tools (git, curl, gcc, pip, npm, …) the image has. */
  tools?: string[];
  imageBuiltAt?: string;
  build?: PackBuildStatus;
}

/** A custom pack: a base pack plus Debian packages, files and setup commands (see images/packs/README.md). */
export interface CustomPackDefinition {
  name: string;
  base: string;
  description?: string;
  packages?: string[];
  files?: Array<{ path: string; content: string; encoding?: 'utf8' | 'base64'; mode?: string }>;
  setup?: string[];
  env?: Record<string, string>;
  run?: { fileName: string; command: string[]; projectCommand: string[] };
  versionCommand?: string[];
}

export interface PackBuildStatus {
  id: string;
  pack: string;
  version: number;
  state: 'queued' | 'building' | 'done' | 'failed';
  progress?: PackProgress;
  result?: { hash: string; sizeBytes: number; built: boolean; durationMs: number };
  error?: { code: string; message: string; details?: Record<string, unknown> };
  startedAt: string;
  finishedAt?: string;
}

export interface PackProgress {
  pack: string;
  phase: 'resolve' | 'download' | 'unpack' | 'configure' | 'setup' | 'squash' | 'done' | 'cached';
  message: string;
  percent?: number;
}

export type PackBuildEvent =
  | { type: 'accepted'; build: PackBuildStatus }
  | ({ type: 'progress' } & PackProgress)
  | { type: 'result'; pack: PackInfo; build: PackBuildStatus }
  | { type: 'error'; code: string; message: string; details?: Record<string, unknown>; build?: PackBuildStatus };

export interface BackendInfo {
  name: BackendName;
  available: boolean;
  reason?: string;
  capabilities: Record<string, unknown>;
  info?: Record<string, unknown>;
  /** The host checks behind `available`, each with what to do when it fails (as kiln doctor shows them). */
  checks: Array<{ name: string; ok: boolean; detail: string }>;
}

export interface FsEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

export interface PoolStats {
  key: { backend: BackendName; pack: string; cpus: number; memoryMib: number; diskMib: number };
  target: number;
  ready: number;
  starting: number;
  hits: number;
  misses: number;
  failures: number;
}

/** Runners of fork runs (one-shot python runs forked from a warm interpreter): per sandbox shape. */
export interface RunnerStats {
  key: { pack: string; cpus: number; memoryMib: number; diskMib: number };
  idle: number;
  busy: number;
  hits: number;
  misses: number;
  retired: number;
}

export interface HealthInfo {
  status: string;
  sandboxes: number;
  capacity: { inUse: number; capacity: number; queued: number };
}
