/**
 * JSON schemas for request bodies and responses; they also feed /openapi.json and the SDK's types
 * (scripts/gen-sdk-types.ts writes sdk/src/generated.ts from them: run npm run gen:sdk after a change).
 * A response schema's `required` is a promise the SDK types rely on; the serializer enforces it.
 */
import { SIZE_MINIMUMS } from '../../core/sandbox.js';
import { BACKEND_NAMES } from '../backends.js';

// Fields shared by several bodies: one definition each, so their bounds cannot drift apart.
const pack = { type: 'string', minLength: 1, maxLength: 64 } as const;
// The registry's names (../backends.ts): a new backend appears in requests and /openapi.json by itself.
const backend = { type: 'string', enum: [...BACKEND_NAMES] };
const cpus = { type: 'number', exclusiveMinimum: SIZE_MINIMUMS.cpus.min, maximum: 64 } as const;
const memoryMib = { type: 'integer', minimum: SIZE_MINIMUMS.memoryMib.min } as const;
const stdin = { type: 'string', maxLength: 16 * 1024 * 1024 } as const;
const timeoutMs = { type: 'integer', minimum: 1 } as const;
const maxOutputBytes = {
  type: 'integer',
  minimum: 0,
  description:
    "Cap on stdout and on stderr, each (default 1 MiB, KILN_DEFAULT_OUTPUT_BYTES); up to the server's KILN_MAX_OUTPUT_BYTES (default 16 MiB), above it 400. A stream over it keeps its head and its last 64 KiB (at most half the cap) and says how many bytes were dropped between",
} as const;
const stdinEncoding = {
  type: 'string',
  enum: ['utf8', 'base64'],
  description: 'How "stdin" is sent: text (default) or base64 of the exact bytes',
} as const;
const encoding = {
  type: 'string',
  enum: ['utf8', 'base64'],
  description: 'How stdout and stderr are sent: "utf8" text (default; invalid bytes become U+FFFD) or "base64" (byte-exact, for binary output). Streamed chunks carry it too',
} as const;

/**
 * The agent takes one exec request as at most 256 KiB of JSON (argv, env, cwd and inline files
 * together). Each field is bounded here; the sum is checked before anything is started, and a
 * request over it answers 413 PAYLOAD_TOO_LARGE naming the limit.
 */
export const EXEC_REQUEST_MAX_BYTES = 256 * 1024;
export const envMap = {
  type: 'object',
  propertyNames: { minLength: 1, maxLength: 1024, pattern: '^[^=\\u0000]+$' },
  additionalProperties: { type: 'string', maxLength: 65536 },
  maxProperties: 256,
  description: 'Environment variables; values up to 64 KiB, and cmd + env + cwd together under 256 KiB',
} as const;
export const cmd = {
  oneOf: [
    { type: 'string', minLength: 1, maxLength: 131072 },
    { type: 'array', minItems: 1, maxItems: 4096, items: { type: 'string', maxLength: 131072 } },
  ],
  description: 'A shell string (run with /bin/sh -c) or an argv array; each string up to 128 KiB, cmd + env + cwd together under 256 KiB',
} as const;
export const cwd = { type: 'string', maxLength: 4096 } as const;

export const errorSchema = {
  type: 'object',
  properties: { code: { type: 'string' }, message: { type: 'string' }, details: { type: 'object', additionalProperties: true } },
  required: ['code', 'message'],
} as const;

export const createSandboxBody = {
  type: 'object',
  additionalProperties: false,
  required: ['pack'],
  properties: {
    pack,
    backend,
    cpus,
    memoryMib,
    diskMib: { type: 'integer', minimum: SIZE_MINIMUMS.diskMib.min },
    ttlSec: { type: 'integer', minimum: SIZE_MINIMUMS.ttlSec.min },
    env: envMap,
    labels: {
      type: 'object',
      maxProperties: 32,
      propertyNames: { pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' },
      additionalProperties: { type: 'string', maxLength: 256 },
      description: 'Tags to find the sandbox by: GET /v1/sandboxes?label=key=value',
    },
    backendOptions: { type: 'object', additionalProperties: true, maxProperties: 32 },
    idleTimeoutSec: {
      type: 'integer',
      minimum: 1,
      description: 'Deleted after this many seconds without an exec, file transfer or review (a workspace sandbox: KILN_WORKSPACE_IDLE_TTL_SEC by default)',
    },
    workspace: {
      type: 'object',
      additionalProperties: false,
      required: ['path'],
      description: 'A host project folder (under KILN_WORKSPACE_ROOTS) mounted copy-on-write at /workspace; review with /changes and /diff, then /approve or /reject (docs/workspaces.md)',
      properties: {
        path: { type: 'string', minLength: 1, maxLength: 4096 },
        gitWritable: { type: 'boolean', description: '.git writable in the overlay (its changes join the change set); default read-only' },
        sizeMib: { type: 'integer', minimum: 16, description: 'What the sandbox may write over the project (default KILN_WORKSPACE_SIZE_MIB)' },
      },
    },
    network: {
      type: 'object',
      additionalProperties: false,
      required: ['policy'],
      description:
        "The sandbox's network (docs/networking.md). none: loopback only (the default); allowlist: only the names (example.org, *.example.org, example.org:5432) and IPv4 blocks (198.51.100.0/24, 198.51.100.7:443) listed, by kiln's resolver and its TLS SNI / HTTP Host check; open: anything but the operator's deny list",
      properties: {
        policy: { type: 'string', enum: ['none', 'allowlist', 'open'] },
        allow: { type: 'array', maxItems: 256, items: { type: 'string', minLength: 1, maxLength: 300 } },
        learn: { type: 'boolean', description: 'allowlist only: let everything through, record what is reached, and propose the allowlist (GET …/network/events)' },
        bandwidthMbit: { type: 'integer', minimum: 0, description: 'Rate limit in each direction, Mbit/s (0: the operator default, KILN_NET_BANDWIDTH_MBIT)' },
      },
    },
    fromSnapshot: {
      type: 'string',
      pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$',
      description: 'A named snapshot to start from: its pack, backend and shape, and its files (or on a microVM its memory and running processes)',
    },
  },
} as const;

const workspacePath = { type: 'string', maxLength: 4096, description: 'A path relative to the workspace, as in the change list' } as const;
const workspacePathBase64 = { type: 'string', maxLength: 8192, description: "The path's exact bytes in base64 (the change list's pathBase64), for names that are not UTF-8" } as const;

export const workspaceChange = {
  type: 'object',
  required: ['path', 'pathBase64', 'status', 'type', 'size', 'binary', 'ignored'],
  properties: {
    path: { type: 'string', description: 'UTF-8 (bytes that are not become U+FFFD: use pathBase64 to name it)' },
    pathBase64: { type: 'string' },
    status: { type: 'string', enum: ['added', 'modified', 'deleted'] },
    type: { type: 'string', enum: ['file', 'directory', 'symlink'] },
    size: { type: 'integer', description: 'Bytes of the new version (deleted: of the old one)' },
    binary: { type: 'boolean' },
    ignored: { type: 'boolean', description: "Matched by the project's .gitignore files: left out of diff and approve unless asked for" },
    modeOld: { type: 'integer' },
    modeNew: { type: 'integer' },
    target: { type: 'string', description: "A symlink's new target" },
  },
} as const;

export const workspaceChanges = {
  type: 'object',
  required: ['changes', 'upperBytes', 'limitBytes'],
  properties: {
    changes: { type: 'array', items: workspaceChange },
    upperBytes: { type: 'integer', description: 'What the sandbox has written over the project (its upper layer)' },
    limitBytes: { type: 'integer' },
    warning: { type: 'string', description: 'Present when the upper layer is above KILN_WORKSPACE_WARN_PERCENT of its limit' },
  },
} as const;

export const workspaceQuery = {
  type: 'object',
  additionalProperties: false,
  properties: {
    ignored: { type: 'string', enum: ['0', '1', 'true', 'false'], description: 'Include gitignored paths' },
    path: workspacePath,
    pathBase64: workspacePathBase64,
    side: { type: 'string', enum: ['old', 'new'], description: 'content: the host version (old) or the sandbox version (new)' },
  },
} as const;

export const approveBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    paths: { type: 'array', maxItems: 100_000, items: workspacePath, description: 'Only these changes (default: every change that is not ignored)' },
    pathsBase64: { type: 'array', maxItems: 100_000, items: workspacePathBase64 },
    force: { type: 'boolean', description: 'Overwrite host files changed since the sandbox started (default: 409 WORKSPACE_CONFLICT listing them)' },
    ignored: { type: 'boolean', description: 'Include gitignored paths' },
  },
} as const;

export const rejectBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    paths: approveBody.properties.paths,
    pathsBase64: approveBody.properties.pathsBase64,
    ignored: approveBody.properties.ignored,
  },
} as const;

export const listQuery = {
  type: 'object',
  properties: {
    label: {
      anyOf: [
        { type: 'string', maxLength: 1024 },
        { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 1024 } },
      ],
    },
    limit: { type: 'string', pattern: '^[0-9]{1,4}$', description: 'Page size, 1 to 1000 (default 100)' },
    cursor: { type: 'string', maxLength: 512 },
  },
} as const;

export const sandboxSchema = {
  type: 'object',
  additionalProperties: true,
  required: ['id', 'pack', 'backend', 'state', 'createdAt', 'expiresAt', 'readyMs', 'cpus', 'memoryMib', 'diskMib', 'execsRunning', 'fromPool', 'details', 'labels'],
  properties: {
    id: { type: 'string' },
    pack: { type: 'string' },
    backend,
    state: { type: 'string', enum: ['ready', 'paused', 'stopping', 'stopped', 'failed'] },
    createdAt: { type: 'string' },
    expiresAt: { type: 'string' },
    readyMs: { type: 'number' },
    cpus: { type: 'number' },
    memoryMib: { type: 'number' },
    diskMib: { type: 'number' },
    execsRunning: { type: 'integer' },
    fromPool: { type: 'boolean' },
    details: { type: 'object', additionalProperties: true },
    exitReason: { type: 'string' },
    labels: { type: 'object', additionalProperties: { type: 'string' } },
    ownerKeyId: { type: 'string' },
    idleTimeoutSec: { type: 'integer' },
    workspace: {
      type: 'object',
      required: ['path', 'gitWritable', 'sizeMib', 'restored'],
      properties: {
        path: { type: 'string' },
        gitWritable: { type: 'boolean' },
        sizeMib: { type: 'integer' },
        restored: { type: 'boolean', description: 'Brought back by a restarted service: the changes were kept, processes were not' },
      },
    },
    pausedAt: { type: 'string', description: 'When it was paused (state paused)' },
    network: {
      type: 'object',
      required: ['policy', 'allow', 'learn', 'address', 'gateway', 'hostInterface', 'bandwidthMbit', 'attachMs'],
      properties: {
        policy: { type: 'string', enum: ['none', 'allowlist', 'open'] },
        allow: { type: 'array', items: { type: 'string' } },
        learn: { type: 'boolean' },
        address: { type: 'string', description: "The sandbox's IPv4 address on kiln's bridge" },
        gateway: { type: 'string', description: "The bridge's address: kiln's resolver" },
        hostInterface: { type: 'string', description: 'The host end of its link (veth or TAP)' },
        bandwidthMbit: { type: 'integer', description: 'Rate limit per direction (0: none)' },
        attachMs: { type: 'number', description: 'How long giving it its network took at create (firewall chain, link, bridge)' },
      },
    },
  },
} as const;

export const networkEvent = {
  type: 'object',
  required: ['seq', 'at', 'kind', 'verdict'],
  properties: {
    seq: { type: 'integer' },
    at: { type: 'string' },
    kind: { type: 'string', enum: ['dns', 'connection'] },
    verdict: { type: 'string', enum: ['allowed', 'refused', 'learned'] },
    name: { type: 'string', description: 'The name asked for (DNS) or carried (TLS SNI, HTTP Host)' },
    address: { type: 'string' },
    port: { type: 'integer' },
    protocol: { type: 'string' },
    reason: { type: 'string' },
  },
} as const;

export const networkEventsSchema = {
  type: 'object',
  required: ['policy', 'events', 'counters', 'proposal'],
  properties: {
    policy: { type: 'string', enum: ['none', 'allowlist', 'open'] },
    events: { type: 'array', items: networkEvent },
    counters: {
      type: 'object',
      required: ['bytesOut', 'bytesIn', 'refused'],
      properties: { bytesOut: { type: 'integer' }, bytesIn: { type: 'integer' }, refused: { type: 'integer' } },
    },
    proposal: {
      type: 'object',
      required: ['policy', 'allow'],
      description: 'The allowlist that would let through what the sandbox reached (its list, plus what learn mode saw or was refused)',
      properties: { policy: { type: 'string', enum: ['allowlist'] }, allow: { type: 'array', items: { type: 'string' } } },
    },
  },
} as const;

export const networkEventsQuery = {
  type: 'object',
  properties: {
    after: { type: 'integer', minimum: 0, description: 'Only events after this seq (poll with the last one seen)' },
    limit: { type: 'integer', minimum: 1, maximum: 2000 },
  },
} as const;

export const pauseResultSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'state', 'processesKept', 'pauseMs', 'sizeBytes'],
  properties: {
    id: { type: 'string' },
    state: { type: 'string', enum: ['paused'] },
    processesKept: { type: 'boolean', description: 'True on microVMs (memory saved: processes continue after resume); false on the namespace backend (files only)' },
    pauseMs: { type: 'number' },
    sizeBytes: { type: 'integer', description: 'The saved state on disk' },
  },
} as const;

export const snapshotBody = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' } },
} as const;

export const snapshotSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'kind', 'backend', 'pack', 'cpus', 'memoryMib', 'diskMib', 'createdAt', 'sizeBytes', 'processesKept'],
  properties: {
    name: { type: 'string' },
    kind: { type: 'string', enum: ['machine', 'files'], description: 'machine: memory and disk through the VMM; files: the writable paths (/workspace, /tmp)' },
    backend: { type: 'string' },
    pack: { type: 'string' },
    cpus: { type: 'number' },
    memoryMib: { type: 'number' },
    diskMib: { type: 'number' },
    createdAt: { type: 'string' },
    sizeBytes: { type: 'integer' },
    processesKept: { type: 'boolean' },
    ownerKeyId: { type: 'string' },
  },
} as const;

export const snapshotNameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' } },
} as const;

export const execBody = {
  type: 'object',
  additionalProperties: false,
  required: ['cmd'],
  properties: {
    cmd,
    stdin,
    env: envMap,
    cwd,
    uid: { type: 'integer', minimum: 0, maximum: 4294967294 },
    timeoutMs,
    maxOutputBytes,
    encoding,
    stdinEncoding,
    stream: { type: 'boolean', description: 'Answer with NDJSON events as output is produced' },
  },
} as const;

export const execResultSchema = {
  type: 'object',
  required: ['stdout', 'stderr', 'exitCode', 'signal', 'timedOut', 'oomKilled', 'outputTruncated', 'durationMs', 'usage'],
  properties: {
    stdout: { type: 'string' },
    stderr: { type: 'string' },
    encoding: { type: 'string', enum: ['utf8', 'base64'] },
    exitCode: { type: ['integer', 'null'] },
    signal: { type: ['string', 'null'] },
    timedOut: { type: 'boolean' },
    oomKilled: { type: 'boolean' },
    outputTruncated: { type: 'boolean', description: 'stdoutTruncated or stderrTruncated' },
    stdoutTruncated: { type: 'boolean' },
    stderrTruncated: { type: 'boolean' },
    stdoutDroppedBytes: { type: 'integer', description: 'Bytes dropped between the head and the tail of stdout' },
    stderrDroppedBytes: { type: 'integer', description: 'Bytes dropped between the head and the tail of stderr' },
    durationMs: { type: 'number' },
    hint: { type: 'string', description: 'Exit 127 for a command the pack lacks: which packs have it, or how to make one that does' },
    usage: {
      type: 'object',
      required: ['cpuUserMs', 'cpuSystemMs', 'peakMemoryBytes'],
      properties: { cpuUserMs: { type: 'number' }, cpuSystemMs: { type: 'number' }, peakMemoryBytes: { type: 'number' } },
    },
  },
} as const;

/** POST /v1/run's answer: the exec result and the sandbox it ran in (deleted by then). */
export const runResultSchema = {
  ...execResultSchema,
  required: [...execResultSchema.required, 'sandboxId', 'createMs'],
  properties: {
    ...execResultSchema.properties,
    sandboxId: { type: 'string' },
    createMs: { type: 'number' },
    forked: { type: 'boolean', description: 'Forked from a warm interpreter into namespaces of its own (a fork run, docs/fork-runs.md) instead of run in a new sandbox' },
  },
} as const;

export const runBody = {
  type: 'object',
  additionalProperties: false,
  required: ['pack'],
  properties: {
    pack,
    backend,
    code: { type: 'string', maxLength: 16 * 1024 * 1024 },
    files: {
      type: 'array',
      maxItems: 1000,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['path', 'content'],
        properties: {
          path: { type: 'string', minLength: 1, maxLength: 4096 },
          content: { type: 'string', maxLength: 16 * 1024 * 1024 },
          encoding: { type: 'string', enum: ['utf8', 'base64'] },
        },
      },
    },
    entrypoint: { type: 'string', minLength: 1, maxLength: 4096 },
    cmd: { ...cmd, description: `Run this in /workspace once the files are placed (tests, builds) instead of the pack's command; "args" are then refused. ${cmd.description}` },
    stdin,
    args: { type: 'array', maxItems: 1024, items: { type: 'string', maxLength: 131072 } },
    env: envMap,
    timeoutMs,
    memoryMib,
    cpus,
    maxOutputBytes,
    encoding,
    stdinEncoding,
    stream: { type: 'boolean' },
  },
} as const;

export const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;

export const pathQuery = {
  type: 'object',
  required: ['path'],
  properties: { path: { type: 'string', minLength: 1, maxLength: 4096 }, mode: { type: 'string', pattern: '^[0-7]{3,4}$' } },
} as const;

/** A stateful code context (POST/GET /v1/sandboxes/:id/contexts). */
export const codeContextSchema = {
  type: 'object',
  required: ['id', 'language', 'cwd', 'createdAt'],
  properties: {
    id: { type: 'string' },
    language: { type: 'string', enum: ['python', 'javascript'] },
    cwd: { type: 'string' },
    createdAt: { type: 'string', format: 'date-time' },
  },
} as const;

export const codeContextList = { type: 'object', required: ['contexts'], properties: { contexts: { type: 'array', items: codeContextSchema } } } as const;

export const createContextBody = {
  type: 'object',
  additionalProperties: false,
  properties: {
    language: { type: 'string', minLength: 1, maxLength: 32, description: 'python (default) or javascript; also py, js' },
    cwd: { ...cwd, minLength: 1, description: "The interpreter's working directory (default /workspace)" },
  },
} as const;

export const contextParams = {
  type: 'object',
  required: ['id', 'ctx'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 128 }, ctx: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;

export const runCodeBody = {
  type: 'object',
  additionalProperties: false,
  required: ['code'],
  properties: {
    code: { type: 'string', maxLength: 1024 * 1024, description: 'Code to run in the context (up to 1 MiB); the value of its last expression is the main result' },
    env: envMap,
    timeoutMs: { ...timeoutMs, description: "Interrupts the run after this long (default: the host's exec default, KILN_DEFAULT_EXEC_TIMEOUT_MS)" },
  },
} as const;

export const portLinkBody = {
  type: 'object',
  additionalProperties: false,
  required: ['port'],
  properties: {
    port: { type: 'integer', minimum: 1, maximum: 65535, description: "the port a server listens on in the sandbox's loopback" },
    ttlSec: { type: 'integer', minimum: 1, maximum: 86400, description: 'how long the link (and the browser cookie it sets) opens the port; default 3600' },
  },
} as const;

export const portLinkSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['url', 'path', 'expiresAt'],
  properties: {
    url: {
      type: 'string',
      description: "the link, for a browser: the port proxy with ?kiln_link=<token>, on the host this request named, at the apps listener's port when there is one (KILN_APPS_PORT)",
    },
    path: { type: 'string', description: 'the same link without scheme, host and port' },
    expiresAt: { type: 'string', format: 'date-time' },
  },
} as const;
