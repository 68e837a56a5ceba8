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
}

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
