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
import type { Owner } from './quotas.js';

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

export interface RunOutcome extends ExecOutcome {
  sandboxId: string;
  createMs: number;
}

const WORKDIR = '/workspace';
/** Base64 inflates by 4/3 and the agent caps a JSON request at 256 KiB. */
const INLINE_FILES_MAX_BYTES = 128 * 1024;

export async function runOnce(manager: SandboxManager, packs: PackCatalog, o: RunOptions, handlers?: ExecStreamHandlers, signal?: AbortSignal, owner?: Owner): Promise<RunOutcome> {
  if ((o.code === undefined) === (o.files === undefined)) throw new KilnError('INVALID_REQUEST', 'pass either "code" (a snippet) or "files" with an "entrypoint"');
  const pack = await packs.get(o.pack);
  const files = o.code !== undefined
    ? [{ path: pack.run.fileName, data: Buffer.from(o.code) }]
    : o.files!.map((f) => ({ path: relPath(f.path), data: Buffer.from(f.content, f.encoding === 'base64' ? 'base64' : 'utf8') }));
  const entry = o.code !== undefined ? pack.run.fileName : relPath(o.entrypoint ?? pack.run.fileName);
  if (o.files && !files.some((f) => f.path === entry)) throw new KilnError('INVALID_REQUEST', `entrypoint "${entry}" is not among the uploaded files`);
  const argv = [...fillCommand(o.code !== undefined ? pack.run.command : pack.run.projectCommand, { file: entry, entrypoint: entry }), ...(o.args ?? [])];

  const t0 = performance.now();
  const sb = await manager.create({ pack: o.pack, backend: o.backend, memoryMib: o.memoryMib, cpus: o.cpus, ttlSec: ttlFor(o.timeoutMs, owner) }, signal, owner);
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
    void manager.delete(sb.id, 'run finished').catch(() => undefined);
  }
}

/** A project-relative path: no absolute paths, no "..". */
function relPath(p: string): string {
  const n = posix.normalize(p);
  if (posix.isAbsolute(n) || n === '..' || n.startsWith('../') || n === '.') throw new KilnError('PATH_ESCAPE', `file path "${p}" must be relative and stay inside the project`);
  return n;
}

/** The run's timeout and a minute to spare, within the key's lifetime limit (the exec's own limit is checked on its own). */
function ttlFor(timeoutMs: number | undefined, owner: Owner | undefined): number {
  const ttl = Math.ceil(((timeoutMs ?? 30_000) + 60_000) / 1000);
  const max = owner?.limits.maxTtlSec;
  return max === undefined ? ttl : Math.max(1, Math.min(ttl, max));
}
