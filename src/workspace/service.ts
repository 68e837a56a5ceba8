/**
 * Workspace sandboxes on this node (docs/workspaces.md): the checks of a request against
 * KILN_WORKSPACE_ROOTS; each workspace's folder under KILN_WORKSPACES_DIR/<sandbox id>/ with its
 * state file (`workspace.json`: the request, the sandbox's facts, its kind and uid); keeping
 * them across a service restart and handing them back to the manager at start; dropping them;
 * and the review (change list, diff, content, approve, reject) of a live sandbox's workspace.
 * The data path is ./mounts.ts (namespace) and ./images.ts (microVMs); the review's parts are
 * ./changes.ts, ./diff.ts, ./content.ts, ./apply.ts and, while the sandbox runs, ./live.ts.
 * Implements the core's WorkspaceHooks (src/core/workspace.ts).
 */
import { randomBytes } from 'node:crypto';
import { lstat, readdir, readFile, readlink, realpath, rename, stat, statfs, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { SandboxWorkspace } from '../core/backend.js';
import type { WorkspaceConfig } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import type { Owner } from '../core/quotas.js';
import type { Sandbox } from '../core/sandbox.js';
import type { KeptWorkspace, OpenedWorkspace, WorkspaceHooks, WorkspaceKind, WorkspaceRequest, WorkspaceSandboxFacts } from '../core/workspace.js';
import type { AgentClient } from '../protocol/agent-client.js';
import { approve } from './apply.js';
import { type Change, computeChanges, keyOfChange, selectChanges } from './changes.js';
import { changeContent } from './content.js';
import { unifiedDiff } from './diff.js';
import { imageWorkspacePaths, prepareImageWorkspace } from './images.js';
import { putInSandbox, removeInSandbox, type TarEntry } from './live.js';
import { attachWorkspace, prepareWorkspace, releaseMounts, releaseWorkspace, workspacePaths } from './mounts.js';
import { ancestorsOf, keyOf, lossyOf } from './paths.js';
import { HostUpperSource, parseScan, scanUpperWithAgent, type UpperEntry, type UpperSource } from './scan.js';
import { initWorkspaceState } from './state.js';

type Log = (msg: string, fields?: Record<string, unknown>) => void;

/** The exec uid of the microVM guests (src/backends/qemu): every file of an image workspace's snapshot is its. */
const GUEST_UID = 1000;

/** `workspace.json`, written atomically. */
export interface WorkspaceRecord {
  version: 1;
  id: string;
  /** active: its sandbox runs or will be restored; discarding: being removed (a crash finishes it at start). */
  state: 'active' | 'discarding';
  createdAt: string;
  kind: WorkspaceKind;
  /** kind 'mount': the host uid the sandbox runs as and owns the upper layer (from KILN_WORKSPACE_UID_BASE). */
  hostUid?: number;
  /** The request as checked: `path` is the real path. */
  request: Required<WorkspaceRequest>;
  facts: WorkspaceSandboxFacts;
}

export interface WorkspacesOptions {
  config: WorkspaceConfig;
  agentPath: string;
  /** Most bytes a reject puts back through the agent at once (KILN_MAX_FILE_BYTES). */
  maxFileBytes: number;
  log?: Log;
}

const ID = /^sb-[0-9a-f]{16}$/;

export class Workspaces implements WorkspaceHooks {
  readonly root: string;
  private readonly log: Log;
  /** Approve and reject run one at a time per workspace. */
  private readonly queues = new Map<string, Promise<unknown>>();

  constructor(private readonly o: WorkspacesOptions) {
    this.root = o.config.dir;
    this.log = o.log ?? (() => undefined);
  }

  private get host() {
    return { dataDir: this.root, agentPath: this.o.agentPath };
  }

  dirOf(id: string): string {
    if (!ID.test(id)) throw new KilnError('INVALID_REQUEST', `"${id}" is not a sandbox id`);
    return join(this.root, id);
  }

  /** The request's path as a real path under one of the roots, or WORKSPACE_FORBIDDEN / INVALID_REQUEST. */
  async check(req: WorkspaceRequest): Promise<Required<WorkspaceRequest>> {
    const { roots, defaultSizeMib, maxSizeMib } = this.o.config;
    if (!roots.length) throw new KilnError('WORKSPACE_FORBIDDEN', 'workspaces are off on this service: the operator sets KILN_WORKSPACE_ROOTS to the folders that may be opened');
    if (typeof req.path !== 'string' || !req.path.startsWith('/'))
      throw new KilnError('INVALID_REQUEST', `workspace.path must be an absolute host path (got ${JSON.stringify(req.path)})`, { details: { field: 'workspace.path' } });
    let real: string;
    try {
      real = await realpath(req.path);
    } catch {
      // Only paths under a root are worth telling apart: elsewhere, say nothing about what exists.
      if (!under(req.path, roots)) throw forbidden(req.path, roots);
      throw new KilnError('INVALID_REQUEST', `workspace.path ${JSON.stringify(req.path)} does not exist`, { details: { field: 'workspace.path' } });
    }
    if (!under(real, roots)) throw forbidden(req.path, roots, real !== req.path);
    if (!(await stat(real)).isDirectory()) throw new KilnError('INVALID_REQUEST', `workspace.path ${JSON.stringify(req.path)} is not a directory`, { details: { field: 'workspace.path' } });
    if (under(this.root, [real]) || under(real, [this.root])) throw new KilnError('WORKSPACE_FORBIDDEN', `workspace.path ${JSON.stringify(req.path)} overlaps kiln's workspaces folder`);
    const sizeMib = req.sizeMib ?? defaultSizeMib;
    if (!Number.isInteger(sizeMib) || sizeMib < 16 || sizeMib > maxSizeMib)
      throw new KilnError('INVALID_REQUEST', `workspace.sizeMib must be from 16 to ${maxSizeMib} on this host (got ${req.sizeMib})`, {
        details: { field: 'workspace.sizeMib', value: req.sizeMib, minimum: 16, maximum: maxSizeMib },
      });
    return { path: real, gitWritable: req.gitWritable ?? false, sizeMib };
  }

  async open(id: string, req: WorkspaceRequest, facts: WorkspaceSandboxFacts, kind: WorkspaceKind, signal?: AbortSignal): Promise<OpenedWorkspace> {
    const dir = this.dirOf(id);
    const kept = await this.record(id);
    if (kept?.state === 'active') {
      // A restore: the kept request and upper layer, whatever the caller passed.
      if (kept.kind !== kind) throw new KilnError('UNSUPPORTED_OPTION', `workspace ${id} was made for a ${kept.kind} backend; restore it on one`);
      return { spec: await this.attach(kept), ...info(kept.request) };
    }
    const request = await this.check(req);
    let rec: WorkspaceRecord;
    if (kind === 'mount') {
      const hostUid = await this.freeUid();
      await prepareWorkspace(this.host, { id, projectDir: request.path, hostUid, sizeMib: request.sizeMib, signal });
      rec = { version: 1, id, state: 'active', createdAt: new Date().toISOString(), kind, hostUid, request, facts };
    } else {
      await prepareImageWorkspace(this.root, { id, projectDir: request.path, guestUid: GUEST_UID, sizeMib: request.sizeMib, signal });
      rec = { version: 1, id, state: 'active', createdAt: new Date().toISOString(), kind, request, facts };
    }
    try {
      await initWorkspaceState(dir);
      await this.writeRecord(rec);
    } catch (e) {
      await releaseWorkspace(this.root, id).catch(() => undefined);
      throw e;
    }
    return { spec: await this.attach(rec, false), ...info(request) };
  }

  /** The spec a backend gets; after a restart, mounts again what a crash or a stop took away. */
  private async attach(rec: WorkspaceRecord, remount = true): Promise<SandboxWorkspace> {
    const { request } = rec;
    if (rec.kind === 'mount') {
      const p = remount ? await attachWorkspace(this.host, { id: rec.id, projectDir: request.path, hostUid: rec.hostUid! }) : workspacePaths(this.root, rec.id);
      return { kind: 'mount', lowerDir: p.lowerDir, mntDir: p.mntDir, hostUid: rec.hostUid!, gitWritable: request.gitWritable };
    }
    // A microVM owns the image while it runs: nothing of it may stay mounted on the host.
    if (remount) await releaseMounts(workspacePaths(this.root, rec.id));
    const p = imageWorkspacePaths(this.root, rec.id);
    return { kind: 'images', lowerImage: p.lowerImage, upperImage: p.upperImage, gitWritable: request.gitWritable };
  }

  /** The lowest workspace uid no kept workspace holds (the backend refuses one a process still runs as). */
  private async freeUid(): Promise<number> {
    const held = new Set<number>();
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      const r = ID.test(name) ? await this.record(name).catch(() => undefined) : undefined;
      if (r?.hostUid !== undefined) held.add(r.hostUid);
    }
    const { uidBase, uidCount } = this.o.config;
    for (let u = uidBase; u < uidBase + uidCount; u++) if (!held.has(u)) return u;
    throw new KilnError('AT_CAPACITY', `all ${uidCount} workspace uids from ${uidBase} are held by kept workspaces`);
  }

  async record(id: string): Promise<WorkspaceRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dirOf(id), 'workspace.json'), 'utf8')) as WorkspaceRecord;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async pendingCount(id: string, agent: AgentClient): Promise<number> {
    const rec = await this.record(id);
    if (rec?.state !== 'active') return 0;
    return (await computeChanges(rec.request.path, this.upper(rec, agent))).length;
  }

  async discard(id: string): Promise<void> {
    const rec = await this.record(id);
    if (rec) await this.writeRecord({ ...rec, state: 'discarding' });
    await releaseWorkspace(this.root, id);
  }

  async keep(id: string): Promise<void> {
    await releaseMounts(workspacePaths(this.root, id));
  }

  /**
   * Start-up: the workspaces a previous run kept, for the manager to restore; folders with no
   * record, one being discarded, an unreadable one, or one of a revoked key are removed; one whose
   * key cannot be checked now (no store) stays on disk, untouched, for a later start.
   */
  async kept(ownerOf: (keyId: string) => Owner | 'revoked' | 'unknown'): Promise<{ kept: KeptWorkspace[]; removed: string[] }> {
    const kept: KeptWorkspace[] = [];
    const removed: string[] = [];
    for (const name of (await readdir(this.root).catch(() => [] as string[])).sort()) {
      let rec: WorkspaceRecord | undefined;
      try {
        rec = ID.test(name) ? await this.record(name) : undefined;
      } catch (e) {
        this.log('workspace record unreadable; removing it', { id: name, error: (e as Error).message });
      }
      if (rec?.state === 'active' && rec.id === name) {
        const owner = rec.facts.ownerKeyId ? ownerOf(rec.facts.ownerKeyId) : undefined;
        if (owner === 'unknown') {
          this.log('workspace of an API key this service cannot check (no store); left as it is', { id: name });
          continue;
        }
        if (owner !== 'revoked') {
          kept.push({ id: name, request: rec.request, facts: rec.facts, owner });
          continue;
        }
        this.log('workspace of a revoked key; removing it', { id: name });
      }
      try {
        await releaseWorkspace(this.root, name);
        removed.push(name);
      } catch (e) {
        this.log('workspace release failed', { id: name, error: (e as Error).message });
      }
    }
    return { kept, removed };
  }

  // The review of a live sandbox's workspace.

  private async require(sb: Sandbox): Promise<WorkspaceRecord> {
    const rec = sb.workspace ? await this.record(sb.id) : undefined;
    if (rec?.state !== 'active') throw new KilnError('WORKSPACE_NOT_FOUND', `sandbox ${sb.id} has no workspace; create one with {"workspace":{"path":…}}`);
    return rec;
  }

  /** The upper layer: on the host (namespace), or through the guest agent (microVMs: the image is the VM's). */
  private upper(rec: WorkspaceRecord, agent: AgentClient): UpperSource {
    if (rec.kind === 'mount') {
      const upperDir = workspacePaths(this.root, rec.id).upperDir;
      return new HostUpperSource(upperDir, { scan: () => scanUpperWithAgent(this.o.agentPath, upperDir) });
    }
    return new AgentUpperSource(agent, this.o.maxFileBytes);
  }

  async changes(sb: Sandbox, o: { ignored: boolean }): Promise<{ changes: Change[]; upperBytes: number; limitBytes: number; warning?: string }> {
    const rec = await this.require(sb);
    const changes = await computeChanges(rec.request.path, this.upper(rec, sb.inner.agent), { includeIgnored: o.ignored });
    const limitBytes = rec.request.sizeMib * 2 ** 20;
    const upperBytes = await this.upperBytes(rec);
    const pct = Math.round((upperBytes / limitBytes) * 100);
    const warning = pct >= this.o.config.warnPercent ? `the workspace's upper layer is ${pct}% full (${upperBytes} of ${limitBytes} bytes): writes fail with ENOSPC once it is full` : undefined;
    return { changes, upperBytes, limitBytes, ...(warning ? { warning } : {}) };
  }

  /** Upper-layer use of the given live workspace sandboxes (for the metrics); one that fails is left out. */
  async sizes(ids: string[]): Promise<Array<{ sandbox: string; upperBytes: number; limitBytes: number }>> {
    const out: Array<{ sandbox: string; upperBytes: number; limitBytes: number }> = [];
    for (const id of ids) {
      const rec = await this.record(id).catch(() => undefined);
      if (rec?.state !== 'active') continue;
      const upperBytes = await this.upperBytes(rec).catch(() => undefined);
      if (upperBytes !== undefined) out.push({ sandbox: id, upperBytes, limitBytes: rec.request.sizeMib * 2 ** 20 });
    }
    return out;
  }

  private async upperBytes(rec: WorkspaceRecord): Promise<number> {
    const p = workspacePaths(this.root, rec.id);
    if (rec.kind === 'mount') {
      const s = await statfs(p.mntDir);
      return (s.blocks - s.bfree) * s.bsize;
    }
    return (await stat(p.image)).blocks * 512;
  }

  async diff(sb: Sandbox, o: { paths?: Buffer[]; ignored: boolean }): Promise<string> {
    const rec = await this.require(sb);
    const upper = this.upper(rec, sb.inner.agent);
    const all = await computeChanges(rec.request.path, upper, { includeIgnored: o.ignored || o.paths !== undefined });
    return unifiedDiff(rec.request.path, upper, this.pick(all, o.paths));
  }

  async content(sb: Sandbox, path: Buffer, side: 'old' | 'new'): Promise<Buffer> {
    const rec = await this.require(sb);
    const upper = this.upper(rec, sb.inner.agent);
    const all = await computeChanges(rec.request.path, upper, { includeIgnored: true });
    const change = all.find((c) => Buffer.from(c.pathBase64, 'base64').equals(path));
    if (!change) throw new KilnError('FILE_NOT_FOUND', `${lossyOf(keyOf(path))} is not among the workspace's changes`);
    const data = await changeContent(rec.request.path, upper, change, side);
    if (!data) throw new KilnError('FILE_NOT_FOUND', `${change.path} has no ${side === 'old' ? 'host' : 'sandbox'} version (${change.status})`);
    return data;
  }

  async approve(sb: Sandbox, o: { paths?: Buffer[]; force: boolean; ignored: boolean }): Promise<{ applied: string[] }> {
    const rec = await this.require(sb);
    return this.serial(rec.id, async () => {
      const upper = this.upper(rec, sb.inner.agent);
      const upperDir = workspacePaths(this.root, rec.id).upperDir;
      const r = await approve({ hostDir: rec.request.path, upperDir, upper, workspaceDir: this.dirOf(rec.id) }, o.paths, { force: o.force, ignored: o.ignored });
      return { applied: r.applied };
    });
  }

  /**
   * Makes the paths equal to the host folder again, through the sandbox's own view (its overlay
   * holds the upper layer, which must not be edited underneath): added paths are removed, the
   * host's versions of modified and deleted ones are put back; a copy equal to the host's is no
   * change. A path under a deleted or replaced directory is rejected with that directory only.
   */
  async reject(sb: Sandbox, o: { paths?: Buffer[]; ignored: boolean }): Promise<{ rejected: string[] }> {
    const rec = await this.require(sb);
    return this.serial(rec.id, async () => {
      const agent = sb.inner.agent;
      const all = await computeChanges(rec.request.path, this.upper(rec, agent), { includeIgnored: o.ignored || o.paths !== undefined });
      const chosen = this.pick(all, o.paths);
      const byKey = new Map(all.map((c) => [keyOfChange(c), c]));
      const chosenKeys = new Set(chosen.map(keyOfChange));
      // Shallowest first; a path under one already handled is covered by it.
      const todo: Change[] = [];
      for (const c of chosen) {
        const k = keyOfChange(c);
        const covering = ancestorsOf(k).find((a) => chosenKeys.has(a) && isReplaced(byKey.get(a)!));
        if (covering !== undefined) continue;
        const blocker = ancestorsOf(k).find((a) => byKey.has(a) && isReplaced(byKey.get(a)!));
        if (blocker !== undefined)
          throw new KilnError('INVALID_REQUEST', `${c.path} is under ${byKey.get(blocker)!.path}, which is ${byKey.get(blocker)!.status}: reject ${byKey.get(blocker)!.path} as a whole`);
        todo.push(c);
      }
      const remove: Buffer[] = [];
      const put: TarEntry[] = [];
      for (const c of todo) {
        const rel = Buffer.from(c.pathBase64, 'base64');
        if (c.status !== 'deleted') remove.push(rel);
        if (c.status !== 'added') put.push(...(await hostEntries(rec.request.path, rel)));
      }
      await removeInSandbox(agent, remove);
      await putInSandbox(agent, put, this.o.maxFileBytes);
      return { rejected: chosen.map((c) => c.path) };
    });
  }

  /** All changes (o.paths undefined), or those the paths name and everything under them. */
  private pick(all: Change[], paths: Buffer[] | undefined): Change[] {
    if (!paths) return all.filter((c) => !c.ignored);
    const picked = selectChanges(all, paths);
    const missing = paths.filter(
      (p) =>
        !picked.some(
          (c) =>
            Buffer.from(c.pathBase64, 'base64').equals(p) ||
            Buffer.from(c.pathBase64, 'base64')
              .subarray(0, p.length + 1)
              .equals(Buffer.concat([p, Buffer.from('/')])),
        ),
    );
    if (missing.length)
      throw new KilnError('INVALID_REQUEST', `not among the workspace's changes: ${missing.map((p) => lossyOf(keyOf(p))).join(', ')}`, { details: { paths: missing.map((p) => lossyOf(keyOf(p))) } });
    return picked;
  }

  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(id) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.catch(() => undefined);
    this.queues.set(id, settled);
    void settled.then(() => {
      if (this.queues.get(id) === settled) this.queues.delete(id);
    });
    return next;
  }

  private async writeRecord(rec: WorkspaceRecord): Promise<void> {
    const dir = this.dirOf(rec.id);
    const tmp = join(dir, `.workspace.json.${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, `${JSON.stringify(rec, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, join(dir, 'workspace.json'));
  }
}

/** A change that replaced what the host has there wholesale (so its children cannot be rejected alone). */
function isReplaced(c: Change): boolean {
  return c.type === 'directory' && (c.status === 'deleted' || c.status === 'added' || c.typeOld !== undefined);
}

/** The host's entry at `rel` (a directory with everything under it) as archive entries, never following a symlink. */
async function hostEntries(hostDir: string, rel: Buffer): Promise<TarEntry[]> {
  const abs = Buffer.concat([Buffer.from(`${hostDir}/`), rel]);
  const st = await lstat(abs).catch(() => undefined);
  if (!st) return [];
  if (st.isSymbolicLink()) return [{ name: rel, type: 'symlink', target: await readlink(abs, { encoding: 'buffer' }) }];
  if (st.isFile()) return [{ name: rel, type: 'file', mode: st.mode & 0o7777, data: await readFile(abs) }];
  if (!st.isDirectory()) return [];
  const out: TarEntry[] = [{ name: rel, type: 'directory', mode: st.mode & 0o7777 }];
  for (const child of await readdir(abs, { encoding: 'buffer' })) out.push(...(await hostEntries(hostDir, Buffer.concat([rel, Buffer.from('/'), child]))));
  return out;
}

/** A microVM workspace's upper layer, through the guest agent: its scan (`ws.scan`) and the merged view's files. */
class AgentUpperSource implements UpperSource {
  private entries?: Promise<UpperEntry[]>;

  constructor(
    private readonly agent: AgentClient,
    private readonly maxBytes: number,
  ) {}

  scan(): Promise<UpperEntry[]> {
    this.entries ??= (async () => {
      const chunks: Buffer[] = [];
      await this.agent.workspaceScan((c) => void chunks.push(c));
      return parseScan(Buffer.concat(chunks).toString('utf8'));
    })();
    return this.entries;
  }

  async read(rel: Buffer): Promise<Buffer> {
    const chunks: Buffer[] = [];
    await this.agent.readFile(`/workspace/${utf8Path(rel)}`, (c) => void chunks.push(c), { maxBytes: this.maxBytes });
    return Buffer.concat(chunks);
  }

  async readlink(rel: Buffer): Promise<Buffer> {
    const e = (await this.scan()).find((x) => x.path.equals(rel));
    if (!e?.target) throw new KilnError('FILE_NOT_FOUND', `${lossyOf(keyOf(rel))} is not a symlink in the workspace`);
    return e.target;
  }
}

/** The agent's file operations take UTF-8 paths: a name that is not cannot be read through them. */
function utf8Path(rel: Buffer): string {
  const s = rel.toString('utf8');
  if (!Buffer.from(s, 'utf8').equals(rel)) throw new KilnError('UNSUPPORTED_OPTION', `${lossyOf(keyOf(rel))}: names that are not UTF-8 cannot be read from a microVM workspace`);
  return s;
}

function info(r: Required<WorkspaceRequest>): { path: string; gitWritable: boolean; sizeMib: number } {
  return { path: r.path, gitWritable: r.gitWritable, sizeMib: r.sizeMib };
}

function under(p: string, roots: string[]): boolean {
  return roots.some((r) => p === r || p.startsWith(r.endsWith(sep) ? r : r + sep));
}

function forbidden(asked: string, roots: string[], viaLink = false): KilnError {
  return new KilnError(
    'WORKSPACE_FORBIDDEN',
    `workspace.path ${JSON.stringify(asked)} is not under a folder this service allows (KILN_WORKSPACE_ROOTS: ${roots.join(':')})${viaLink ? '; it leads there through a symlink' : ''}`,
    { details: { field: 'workspace.path' } },
  );
}
