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

export async function runOnce(manager: SandboxManager, packs: PackCatalog, o: RunOptions, handlers?: ExecStreamHandlers, signal?: AbortSignal, owner?: Owner): Promise<RunOutcome> {
  if (o.code !== undefined && o.files !== undefined)
    throw new KilnError('INVALID_REQUEST', 'both "code" and "files" were sent: pass either "code" (a snippet) or "files" with an "entrypoint" (a project)');
  if (o.cmd === undefined && o.code === undefined && o.files === undefined)
    throw new KilnError('INVALID_REQUEST', 'neither "code" nor "files" was sent (nor a "cmd"): pass "code" (a snippet), "files" with an "entrypoint" (a project), or a "cmd" to run');
  if (o.cmd !== undefined && o.args !== undefined) throw new KilnError('INVALID_REQUEST', '"args" are added to the pack\'s command, which "cmd" replaces: put the arguments in "cmd"');
  manager.checkOutputCap(o.maxOutputBytes);
  const pack = await packs.get(o.pack);
  const snippet = o.code === undefined ? undefined : snippetFileName(pack.run.fileName, o.code);
  const files = o.code !== undefined ? [{ path: snippet!, data: Buffer.from(o.code) }] : (o.files ?? []).map((f, i) => ({ path: relPath(f.path), data: fileData(f, i) }));
  const entry = snippet ?? relPath(o.entrypoint ?? pack.run.fileName);
  if (o.files && (o.cmd === undefined || o.entrypoint !== undefined) && !files.some((f) => f.path === entry)) {
    const sent =
      files
        .slice(0, 10)
        .map((f) => `"${f.path}"`)
        .join(', ') + (files.length > 10 ? ', …' : '');
    throw new KilnError('INVALID_REQUEST', `entrypoint "${entry}" is not among the uploaded files (${sent || 'none'}); name one of them in "entrypoint"`, {
      details: { field: 'entrypoint', value: entry },
    });
  }
  const argv = o.cmd !== undefined ? o.cmd : [...fillCommand(snippet !== undefined ? pack.run.command : pack.run.projectCommand, { file: entry, entrypoint: entry }), ...(o.args ?? [])];

  const ttlSec = ttlFor(manager, o.timeoutMs, owner);
  // Small programs travel inside the exec request (one agent round trip); big ones are uploaded.
  const inline = files.reduce((n, f) => n + f.data.length, 0) <= INLINE_FILES_MAX_BYTES;
  const placed = files.map((f) => ({ path: posix.join(WORKDIR, f.path), data: f.data }));
  // A fork run when the host has runners for the pack (a warm run for the pack's own command in
  // its own environment, an exec run for anything else); a sandbox of its own otherwise.
  if (inline) {
    const exec = { cmd: argv, stdin: o.stdin, env: o.env, cwd: WORKDIR, timeoutMs: o.timeoutMs, maxOutputBytes: o.maxOutputBytes, files: placed };
    const forked = await manager.forkRun({ pack: o.pack, backend: o.backend, cpus: o.cpus, memoryMib: o.memoryMib, ttlSec }, exec, handlers, signal, owner);
    if (forked) return forked;
  }
  const t0 = performance.now();
  const sb = await manager.create({ pack: o.pack, backend: o.backend, memoryMib: o.memoryMib, cpus: o.cpus, ttlSec }, signal, owner);
  const createMs = Math.round((performance.now() - t0) * 10) / 10;
  try {
    if (!inline) await Promise.all(placed.map((f) => manager.writeFile(sb.id, f.path, f.data)));
    const out = await manager.runExec(
      sb.id,
      {
        cmd: argv,
        stdin: o.stdin,
        env: o.env,
        cwd: WORKDIR,
        timeoutMs: o.timeoutMs,
        maxOutputBytes: o.maxOutputBytes,
        files: inline ? placed : undefined,
      },
      handlers,
      signal,
    );
    return { ...out, sandboxId: sb.id, createMs };
  } finally {
    // Answer first, tear down after: the admission slot is held until the delete completes, so
    // capacity stays exact, and a crash in between is cleaned by the start-up scan.
    void manager.delete(sb.id, 'run finished').catch(() => undefined);
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

/** A file's bytes; base64 that is not base64 is refused, never decoded into whatever Node makes of it. */
function fileData(f: { content: string; encoding?: 'utf8' | 'base64' }, i: number): Buffer {
  if (f.encoding !== 'base64') return Buffer.from(f.content, 'utf8');
  const bad = /[^A-Za-z0-9+/=\s]/.exec(f.content);
  const text = f.content.replace(/\s+/g, '');
  if (bad || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) {
    const where = bad ? `: ${JSON.stringify(bad[0])} at offset ${bad.index}` : ': "=" inside it, or a length no base64 has';
    throw new KilnError('INVALID_REQUEST', `files[${i}].content is not valid base64${where} (the file has "encoding": "base64"; send standard base64, or drop "encoding" for UTF-8 text)`, {
      details: { field: `files[${i}].content`, encoding: 'base64' },
    });
  }
  return Buffer.from(text, 'base64');
}

/**
 * The one-shot sandbox lives for the run's timeout plus a margin. A timeoutMs the host refuses is
 * reported as timeoutMs: the user never sent the ttlSec derived from it.
 */
function ttlFor(manager: SandboxManager, timeoutMs: number | undefined, owner: Owner | undefined): number {
  const marginMs = 60_000;
  if (timeoutMs !== undefined) manager.execTimeout(timeoutMs);
  const maxMs = manager.limits.maxTtlSec * 1000 - marginMs;
  const ms = timeoutMs ?? 30_000;
  if (ms > maxMs) {
    throw new KilnError(
      'INVALID_REQUEST',
      `timeoutMs ${ms} is more than this host lets a one-shot sandbox live (KILN_MAX_TTL_SEC=${manager.limits.maxTtlSec} s, less a 60 s margin): pass timeoutMs up to ${maxMs}`,
      { details: { field: 'timeoutMs', value: ms, maximum: maxMs } },
    );
  }
  // Within the key's lifetime limit too (the exec's own limit is checked on its own).
  const ttl = Math.ceil((ms + marginMs) / 1000);
  const max = owner?.limits.maxTtlSec;
  return max === undefined ? ttl : Math.max(1, Math.min(ttl, max));
}
