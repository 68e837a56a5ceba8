/**
 * Public API shapes (mirrors /openapi.json). Deliberately standalone rather than re-exported from
 * src/core: the dashboard typechecks the SDK for browsers, and core types pull in Node's.
 */
export type BackendName = 'namespace' | 'qemu' | 'firecracker';

export interface CreateSandboxOptions {
  pack: string;
  backend?: BackendName;
  cpus?: number;
  memoryMib?: number;
  diskMib?: number;
  ttlSec?: number;
  env?: Record<string, string>;
  backendOptions?: Record<string, unknown>;
}

export interface SandboxInfo {
  id: string;
  pack: string;
  backend: BackendName;
  state: 'ready' | 'stopping' | 'stopped' | 'failed';
  createdAt: string;
  expiresAt: string;
  readyMs: number;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  execsRunning: number;
  fromPool: boolean;
  details: Record<string, unknown>;
  exitReason?: string;
}

export interface ExecOptions {
  cmd: string | string[];
  stdin?: string;
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  timeoutMs?: number;
  maxOutputBytes?: number;
}

export interface ExecUsage {
  cpuUserMs: number;
  cpuSystemMs: number;
  peakMemoryBytes: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  oomKilled: boolean;
  outputTruncated: boolean;
  durationMs: number;
  usage: ExecUsage;
}

export interface RunOptions {
  pack: string;
  backend?: BackendName;
  code?: string;
  files?: Array<{ path: string; content: string; encoding?: 'utf8' | 'base64' }>;
  entrypoint?: string;
  stdin?: string;
  args?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  memoryMib?: number;
  cpus?: number;
  maxOutputBytes?: number;
}

export interface RunResult extends ExecResult {
  sandboxId: string;
  createMs: number;
}

export type ExecEvent =
  | { type: 'started'; pid: number }
  | { type: 'stdout' | 'stderr'; data: string }
  | ({ type: 'result' } & Omit<ExecResult, 'stdout' | 'stderr'> & { sandboxId?: string; createMs?: number })
  | { type: 'error'; code: string; message: string };

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

export interface HealthInfo {
  status: string;
  sandboxes: number;
  capacity: { inUse: number; capacity: number; queued: number };
}
