/**
 * Shapes of the JSON payloads in protocol v2 and the schemas that check what the agent sends.
 * Everything from the agent is untrusted: it is validated before any field is read.
 */
import AjvModule from 'ajv';

const Ajv = AjvModule.default ?? AjvModule;
const ajv = new Ajv({ allErrors: false, removeAdditional: false });

/** 2 = 1 + per-stream flow control (WINDOW frames). */
export const PROTOCOL_VERSION = 2;

export interface ExecRequest {
  argv: string[];
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  gid?: number;
  timeoutMs?: number;
  /** Caps stdout and stderr each (agent default 1 MiB): head streamed, tail sent at the end. */
  maxOutputBytes?: number;
  stdin?: boolean;
  tty?: { cols: number; rows: number };
  /** Written before the process starts (base64 data); keep the whole request under 256 KiB. */
  files?: Array<{ path: string; data: string; mode?: number }>;
  /** A runner's run: forked by its zygote or refused (NOT_FORKABLE), never a plain exec there. */
  fork?: boolean;
}

/**
 * A program started ahead of its run (op "prestart"): `file` is a named pipe until the run; the
 * agent's first exec with the same argv, env, cwd and uid, no stdin or tty, and `file` among its
 * files runs on it. Any other request cancels it.
 */
export interface PrestartRequest extends Omit<ExecRequest, 'stdin' | 'tty' | 'files' | 'timeoutMs' | 'maxOutputBytes'> {
  file: string;
}

export interface ExecUsage {
  cpuUserMs: number;
  cpuSystemMs: number;
  peakMemoryBytes: number;
}

export interface ExecResult extends ExecUsage {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  durationMs: number;
  outputTruncated: boolean;
  /** Bytes dropped between a stream's head and its tail (0: the stream came whole). */
  stdoutDroppedBytes: number;
  stderrDroppedBytes: number;
  /** The agent forked it from its runner's zygote (agent/zygote_linux.go): the runner is still unused. */
  forked?: boolean;
}

export interface HelloResult {
  version: number;
  agent: string;
  pid: number;
  transport: string;
  uid: number;
  bootMs?: number;
  /** Present when the hello carried a sync (restored clones). */
  sync?: SyncResult;
}

export interface TransferResult {
  bytes: number;
  files?: number;
}

export interface FsEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

export interface SyncResult {
  reseeded: boolean;
  clockSet: boolean;
}

export interface AgentErrorPayload {
  code: string;
  message: string;
}

const num = { type: 'number' } as const;
const str = (maxLength = 4096) => ({ type: 'string', maxLength }) as const;

const syncResultSchema = {
  type: 'object',
  required: ['reseeded', 'clockSet'],
  properties: { reseeded: { type: 'boolean' }, clockSet: { type: 'boolean' } },
} as const;

export const validateHello = ajv.compile<HelloResult>({
  type: 'object',
  required: ['version', 'agent', 'pid', 'transport', 'uid'],
  properties: {
    version: { type: 'integer' },
    agent: str(200),
    pid: { type: 'integer' },
    transport: str(64),
    uid: { type: 'integer' },
    bootMs: num,
    sync: syncResultSchema,
  },
});

export const validateExecResult = ajv.compile<ExecResult>({
  type: 'object',
  required: ['exitCode', 'signal', 'timedOut', 'durationMs', 'outputTruncated', 'cpuUserMs', 'cpuSystemMs', 'peakMemoryBytes'],
  properties: {
    exitCode: { type: ['integer', 'null'] },
    signal: { type: ['string', 'null'], maxLength: 32 },
    timedOut: { type: 'boolean' },
    durationMs: num,
    cpuUserMs: num,
    cpuSystemMs: num,
    peakMemoryBytes: num,
    outputTruncated: { type: 'boolean' },
    // Optional: agents before per-stream caps (and the test fakes) leave them out; read as 0.
    stdoutDroppedBytes: { type: 'integer', minimum: 0 },
    stderrDroppedBytes: { type: 'integer', minimum: 0 },
  },
});

export const validateStarted = ajv.compile<{ event: string; pid: number }>({
  type: 'object',
  required: ['event'],
  properties: { event: str(64), pid: { type: 'integer' } },
});

/** EVENT sent before a stream's tail when bytes were dropped between its head and its tail. */
export const validateTruncated = ajv.compile<{ event: 'truncated'; stream: 'stdout' | 'stderr'; droppedBytes: number }>({
  type: 'object',
  required: ['event', 'stream', 'droppedBytes'],
  properties: { event: { const: 'truncated' }, stream: { enum: ['stdout', 'stderr'] }, droppedBytes: { type: 'integer', minimum: 1 } },
});

export const validateTransfer = ajv.compile<TransferResult>({
  type: 'object',
  required: ['bytes'],
  properties: { bytes: num, files: num },
});

export const validateFsList = ajv.compile<{ entries: FsEntry[] }>({
  type: 'object',
  required: ['entries'],
  properties: {
    entries: {
      type: 'array',
      maxItems: 10000,
      items: {
        type: 'object',
        required: ['name', 'type'],
        properties: { name: str(4096), type: { enum: ['file', 'dir', 'symlink', 'other'] }, size: num, mode: num, mtimeMs: num },
      },
    },
  },
});

export const validateSync = ajv.compile<SyncResult>(syncResultSchema);

export const validatePrestart = ajv.compile<{ pid: number }>({ type: 'object', required: ['pid'], properties: { pid: num } });
export const validatePing = ajv.compile<{ nowMs: number }>({ type: 'object', required: ['nowMs'], properties: { nowMs: num } });

export const validateAgentError = ajv.compile<AgentErrorPayload>({
  type: 'object',
  required: ['code', 'message'],
  properties: { code: str(64), message: str(8192) },
});
