/**
 * The code-runner use case: create a fresh sandbox (from a warm pool when one is set up), write the
 * snippet or project, run it, and delete the sandbox on every path.
 */
import { posix } from 'node:path';
import type { BackendName } from './backend.js';
import { KilnError } from './errors.js';
import type { ExecOutcome, ExecStreamHandlers } from './exec.js';
import type { SandboxManager } from './manager.js';
import { fillCommand, type PackCatalog } from './packs.js';

export interface RunOptions {
  pack: string;
  backend?: BackendName;
  code?: string;
  files?: Array<{ path: string; content: string; encoding?: 'utf8' | 'base64' }>;
  entrypoint?: string;
  /** Run this (a shell string or argv, in /workspace) instead of the pack's command: tests, builds. */
  cmd?: string | string[];
  stdin?: string | Buffer;
  args?: string[];
  env?: Record<string, string>;
  timeoutMs?: number;
  memoryMib?: number;
  cpus?: number;
  maxOutputBytes?: number;
}

export interface RunOutcome extends ExecOutcome {
  sandboxId: string;
  createMs: number;
}

const WORKDIR = '/workspace';
/** Base64 inflates by 4/3 and the agent caps a JSON request at 256 KiB. */
const INLINE_FILES_MAX_BYTES = 128 * 1024;

export async function runOnce(manager: SandboxManager, packs: PackCatalog, o: RunOptions, handlers?: ExecStreamHandlers, signal?: AbortSignal): Promise<RunOutcome> {
  if (o.code !== undefined && o.files !== undefined) throw new KilnError('INVALID_REQUEST', 'pass either "code" (a snippet) or "files" (a project), not both');
  if (o.cmd === undefined && o.code === undefined && o.files === undefined) throw new KilnError('INVALID_REQUEST', 'pass "code" (a snippet), "files" with an "entrypoint" (a project), or a "cmd" to run');
  if (o.cmd !== undefined && o.args !== undefined) throw new KilnError('INVALID_REQUEST', '"args" are added to the pack\'s command, which "cmd" replaces: put the arguments in "cmd"');
  manager.checkOutputCap(o.maxOutputBytes);
  const pack = await packs.get(o.pack);
  const snippet = o.code === undefined ? undefined : snippetFileName(pack.run.fileName, o.code);
  const files = o.code !== undefined
    ? [{ path: snippet!, data: Buffer.from(o.code) }]
    : (o.files ?? []).map((f) => ({ path: relPath(f.path), data: Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8') }));
  const entry = snippet ?? relPath(o.entrypoint ?? pack.run.fileName);
  if (o.files && (o.cmd === undefined || o.entrypoint !== undefined) && !files.some((f) => f.path === entry)) throw new KilnError('INVALID_REQUEST', `entrypoint "${entry}" is not among the uploaded files`);
  const argv = o.cmd !== undefined
    ? o.cmd
    : [...fillCommand(snippet !== undefined ? pack.run.command : pack.run.projectCommand, { file: entry, entrypoint: entry }), ...(o.args ?? [])];

  const t0 = performance.now();
  const sb = await manager.create({ pack: o.pack, backend: o.backend, memoryMib: o.memoryMib, cpus: o.cpus, ttlSec: ttlFor(o.timeoutMs) }, signal);
  const createMs = Math.round((performance.now() - t0) * 10) / 10;
  try {
    // Small programs travel inside the exec request (one agent round trip); big ones are uploaded.
    const inline = files.reduce((n, f) => n + f.data.length, 0) <= INLINE_FILES_MAX_BYTES;
    const placed = files.map((f) => ({ path: posix.join(WORKDIR, f.path), data: f.data }));
    if (!inline) await Promise.all(placed.map((f) => manager.writeFile(sb.id, f.path, f.data)));
    const out = await manager.runExec(sb.id, {
      cmd: argv, stdin: o.stdin, env: o.env, cwd: WORKDIR, timeoutMs: o.timeoutMs, maxOutputBytes: o.maxOutputBytes,
      files: inline ? placed : undefined,
    }, handlers, signal);
    return { ...out, sandboxId: sb.id, createMs };
  } finally {
    // Answer first, tear down after: the admission slot is held until the delete completes, so
    // capacity stays exact, and a crash in between is cleaned by the start-up scan.
    void manager.delete(sb.id).catch(() => undefined);
  }
}

/**
 * JavaScript with static import/export is an ES module: Node 18 runs a .js file as CommonJS and
 * fails on it, so such a snippet is written as .mjs. Anything else keeps the pack's file name.
 */
export function snippetFileName(fileName: string, code: string): string {
  return fileName.endsWith('.js') && ESM_SYNTAX.test(code) ? fileName.replace(/\.js$/, '.mjs') : fileName;
}

/** A line that starts with a static import or an export statement (not `import(`, a call). */
const ESM_SYNTAX = /^[ \t]*(import(?:[ \t]+[\w$]|[ \t]*[{*"'])|export(?:[ \t]+(?:default|const|let|var|function|async|class)\b|[ \t]*[{*]))/m;

/** A project-relative path: no absolute paths, no "..". */
function relPath(p: string): string {
  const n = posix.normalize(p);
  if (posix.isAbsolute(n) || n === '..' || n.startsWith('../') || n === '.') throw new KilnError('PATH_ESCAPE', `file path "${p}" must be relative and stay inside the project`);
  return n;
}

function ttlFor(timeoutMs: number | undefined): number {
  return Math.ceil(((timeoutMs ?? 30_000) + 60_000) / 1000);
}
