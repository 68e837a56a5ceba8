/** JSON schemas for request bodies and responses; they also feed /openapi.json. */
import { BACKEND_NAMES } from '../backends.js';

// Fields shared by several bodies: one definition each, so their bounds cannot drift apart.
const pack = { type: 'string', minLength: 1, maxLength: 64 } as const;
// The registry's names (../backends.ts): a new backend appears in requests and /openapi.json by itself.
const backend = { type: 'string', enum: [...BACKEND_NAMES] };
const cpus = { type: 'number', exclusiveMinimum: 0, maximum: 64 } as const;
const memoryMib = { type: 'integer', minimum: 16 } as const;
const stdin = { type: 'string', maxLength: 16 * 1024 * 1024 } as const;
const timeoutMs = { type: 'integer', minimum: 1 } as const;
const maxOutputBytes = { type: 'integer', minimum: 0 } as const;

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
    diskMib: { type: 'integer', minimum: 1 },
    ttlSec: { type: 'integer', minimum: 1 },
    env: envMap,
    labels: {
      type: 'object', maxProperties: 32,
      propertyNames: { pattern: '^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$' },
      additionalProperties: { type: 'string', maxLength: 256 },
      description: 'Tags to find the sandbox by: GET /v1/sandboxes?label=key=value',
    },
    backendOptions: { type: 'object', additionalProperties: true, maxProperties: 32 },
  },
} as const;

export const listQuery = {
  type: 'object',
  properties: {
    label: { anyOf: [{ type: 'string', maxLength: 1024 }, { type: 'array', maxItems: 32, items: { type: 'string', maxLength: 1024 } }] },
    limit: { type: 'string', pattern: '^[0-9]{1,4}$', description: 'Page size, 1 to 1000 (default 100)' },
    cursor: { type: 'string', maxLength: 512 },
  },
} as const;

export const sandboxSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    id: { type: 'string' }, pack: { type: 'string' }, backend: { type: 'string' }, state: { type: 'string' },
    createdAt: { type: 'string' }, expiresAt: { type: 'string' }, readyMs: { type: 'number' },
    cpus: { type: 'number' }, memoryMib: { type: 'number' }, diskMib: { type: 'number' },
    execsRunning: { type: 'integer' }, fromPool: { type: 'boolean' },
    details: { type: 'object', additionalProperties: true }, exitReason: { type: 'string' },
    labels: { type: 'object', additionalProperties: { type: 'string' } }, ownerKeyId: { type: 'string' },
  },
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
    stream: { type: 'boolean', description: 'Answer with NDJSON events as output is produced' },
  },
} as const;

export const execResultSchema = {
  type: 'object',
  properties: {
    stdout: { type: 'string' }, stderr: { type: 'string' },
    exitCode: { type: ['integer', 'null'] }, signal: { type: ['string', 'null'] },
    timedOut: { type: 'boolean' }, oomKilled: { type: 'boolean' }, outputTruncated: { type: 'boolean' },
    durationMs: { type: 'number' },
    usage: { type: 'object', properties: { cpuUserMs: { type: 'number' }, cpuSystemMs: { type: 'number' }, peakMemoryBytes: { type: 'number' } } },
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
      type: 'array', maxItems: 1000,
      items: {
        type: 'object', additionalProperties: false, required: ['path', 'content'],
        properties: {
          path: { type: 'string', minLength: 1, maxLength: 4096 },
          content: { type: 'string', maxLength: 16 * 1024 * 1024 },
          encoding: { type: 'string', enum: ['utf8', 'base64'] },
        },
      },
    },
    entrypoint: { type: 'string', minLength: 1, maxLength: 4096 },
    stdin,
    args: { type: 'array', maxItems: 1024, items: { type: 'string', maxLength: 131072 } },
    env: envMap,
    timeoutMs,
    memoryMib,
    cpus,
    maxOutputBytes,
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
