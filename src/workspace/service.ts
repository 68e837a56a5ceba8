/**
 * Workspace sandboxes' lifecycle on this node: the checks of a request against KILN_WORKSPACE_ROOTS,
 * each workspace's folder and state file under KILN_WORKSPACES_DIR/<sandbox id>/, keeping them
 * across a service restart and handing them back to the manager at start, and dropping them for
 * good. The data path (upper-layer image, idmapped lower) is ./mounts.ts; the review (changes, diff,
 * approve, reject) is ./review.ts. Implements the core's WorkspaceHooks (src/core/workspace.ts).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, sep } from 'node:path';
import type { SandboxWorkspace } from '../core/backend.js';
import type { WorkspaceConfig } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import type { Owner } from '../core/quotas.js';
import type { KeptWorkspace, WorkspaceHooks, WorkspaceRequest, WorkspaceSandboxFacts } from '../core/workspace.js';

type Log = (msg: string, fields?: Record<string, unknown>) => void;

/** The state file of one workspace (`workspace.json`), written atomically. */
export interface WorkspaceState {
  version: 1;
  id: string;
  /** active: its sandbox runs or will be restored; discarding: being removed (a crash finishes it at start). */
  state: 'active' | 'discarding';
  createdAt: string;
  /** The request as checked: `path` is the real path. */
  request: Required<WorkspaceRequest>;
  facts: WorkspaceSandboxFacts;
}

export interface WorkspaceMounter {
  /** Removes whatever the workspace folder holds on the host (mounts, loop device) and the folder. Idempotent. */
  release(dir: string): Promise<void>;
  /** Undoes the host mounts but keeps the upper layer (a service stop). Idempotent. */
  unmount(dir: string): Promise<void>;
}

export interface WorkspacesOptions {
  config: WorkspaceConfig;
  dataDir: string;
  mounter: WorkspaceMounter;
  /** Changes nobody approved or rejected, not counting gitignored ones (./review.ts). */
  pending: (ws: SandboxWorkspace, state: WorkspaceState) => Promise<number>;
  log?: Log;
}

const ID = /^sb-[0-9a-f]{16}$/;

export class Workspaces implements WorkspaceHooks {
  readonly root: string;
  private readonly log: Log;

  constructor(private readonly o: WorkspacesOptions) {
    this.root = o.config.dir;
    this.log = o.log ?? (() => undefined);
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
    if (under(this.o.dataDir, [real]) || under(real, [this.o.dataDir]))
      throw new KilnError('WORKSPACE_FORBIDDEN', `workspace.path ${JSON.stringify(req.path)} overlaps kiln's data directory`);
    const sizeMib = req.sizeMib ?? defaultSizeMib;
    if (!Number.isInteger(sizeMib) || sizeMib < 16 || sizeMib > maxSizeMib)
      throw new KilnError('INVALID_REQUEST', `workspace.sizeMib must be from 16 to ${maxSizeMib} on this host (got ${req.sizeMib})`, {
        details: { field: 'workspace.sizeMib', value: req.sizeMib, minimum: 16, maximum: maxSizeMib },
      });
    return { path: real, gitWritable: req.gitWritable ?? false, sizeMib };
  }

  async open(id: string, req: WorkspaceRequest, facts: WorkspaceSandboxFacts): Promise<SandboxWorkspace> {
    const dir = this.dirOf(id);
    const existing = await this.state(id);
    if (existing) {
      // A restore: the kept request and its upper layer, whatever the caller passed.
      return { dir, hostPath: existing.request.path, sizeMib: existing.request.sizeMib, gitWritable: existing.request.gitWritable };
    }
    const request = await this.check(req);
    await mkdir(this.root, { recursive: true, mode: 0o711 });
    await mkdir(dir, { mode: 0o711 });
    const state: WorkspaceState = { version: 1, id, state: 'active', createdAt: new Date().toISOString(), request, facts };
    await this.writeState(dir, state);
    return { dir, hostPath: request.path, sizeMib: request.sizeMib, gitWritable: request.gitWritable };
  }

  async state(id: string): Promise<WorkspaceState | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dirOf(id), 'workspace.json'), 'utf8')) as WorkspaceState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** The workspace of a live sandbox, for the review routes; WORKSPACE_NOT_FOUND when it has none. */
  async require(id: string): Promise<{ ws: SandboxWorkspace; state: WorkspaceState }> {
    const state = await this.state(id);
    if (!state || state.state !== 'active') throw new KilnError('WORKSPACE_NOT_FOUND', `sandbox ${id} has no workspace; create one with {"workspace":{"path":…}}`);
    const r = state.request;
    return { ws: { dir: this.dirOf(id), hostPath: r.path, sizeMib: r.sizeMib, gitWritable: r.gitWritable }, state };
  }

  async pendingCount(id: string): Promise<number> {
    const got = await this.state(id);
    if (!got || got.state !== 'active') return 0;
    const { ws, state } = await this.require(id);
    return this.o.pending(ws, state);
  }

  async discard(id: string): Promise<void> {
    const dir = this.dirOf(id);
    const state = await this.state(id);
    if (state) await this.writeState(dir, { ...state, state: 'discarding' });
    await this.o.mounter.release(dir);
    await rm(dir, { recursive: true, force: true });
  }

  async keep(id: string): Promise<void> {
    await this.o.mounter.unmount(this.dirOf(id));
  }

  /**
   * Start-up: the workspaces a previous run kept, for the manager to restore; folders with no state,
   * a state being discarded or an unreadable one are removed (their mounts too).
   */
  async kept(ownerOf: (keyId: string) => Owner | undefined): Promise<{ kept: KeptWorkspace[]; removed: string[] }> {
    const kept: KeptWorkspace[] = [];
    const removed: string[] = [];
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return { kept, removed };
    }
    for (const name of names.sort()) {
      const dir = join(this.root, name);
      let state: WorkspaceState | undefined;
      try {
        state = ID.test(name) ? await this.state(name) : undefined;
      } catch (e) {
        this.log('workspace state unreadable; removing it', { id: name, error: (e as Error).message });
      }
      if (state?.state === 'active' && state.id === name) {
        const owner = state.facts.ownerKeyId ? ownerOf(state.facts.ownerKeyId) : undefined;
        if (state.facts.ownerKeyId && !owner) {
          // Its key was revoked meanwhile: nobody may reach it any more.
          this.log('workspace of a revoked key; removing it', { id: name });
        } else {
          kept.push({ id: name, request: state.request, facts: state.facts, owner });
          continue;
        }
      }
      await this.o.mounter.release(dir).catch((e: Error) => this.log('workspace release failed', { id: name, error: e.message }));
      await rm(dir, { recursive: true, force: true });
      removed.push(name);
    }
    return { kept, removed };
  }

  private async writeState(dir: string, state: WorkspaceState): Promise<void> {
    const tmp = join(dir, `.workspace.json.${randomBytes(4).toString('hex')}`);
    await writeFile(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, join(dir, 'workspace.json'));
  }
}

function under(p: string, roots: string[]): boolean {
  return roots.some((r) => p === r || p.startsWith(r.endsWith(sep) ? r : r + sep));
}

function forbidden(asked: string, roots: string[], viaLink = false): KilnError {
  return new KilnError(
    'WORKSPACE_FORBIDDEN',
    `workspace.path ${JSON.stringify(asked)} is not under a folder this service allows (KILN_WORKSPACE_ROOTS: ${roots.join(':')})${viaLink ? '; it leads there through a symlink' : ''}`,
    { details: { field: 'workspace.path', roots } },
  );
}
