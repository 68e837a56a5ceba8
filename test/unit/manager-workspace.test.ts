/**
 * The lifecycle's side of workspace sandboxes against the in-memory backend and a recording
 * WorkspaceHooks: the backend gets the workspace in its spec and no pooled sandbox is used; a delete
 * with pending changes is refused unless discarded; a service stop keeps the workspace; a restore
 * brings the sandbox back under its id; a failed first start drops the new workspace; idle timeouts.
 * (The data path and the review run for real in test/integration/workspace*.test.ts.)
 */
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, BackendName } from '../../src/core/backend.js';
import { loadConfig } from '../../src/core/config.js';
import { isKilnError } from '../../src/core/errors.js';
import { SandboxManager } from '../../src/core/manager.js';
import type { OpenedWorkspace, WorkspaceHooks, WorkspaceKind, WorkspaceRequest, WorkspaceSandboxFacts } from '../../src/core/workspace.js';
import { MemoryBackend, type MemoryBackendOptions, memoryPacks } from './memory-backend.js';

class RecordingHooks implements WorkspaceHooks {
  calls: string[] = [];
  pending = 0;
  opened = new Map<string, { req: WorkspaceRequest; facts: WorkspaceSandboxFacts }>();
  async open(id: string, req: WorkspaceRequest, facts: WorkspaceSandboxFacts, _kind: WorkspaceKind): Promise<OpenedWorkspace> {
    this.calls.push(`open ${id}`);
    this.opened.set(id, { req, facts });
    const gitWritable = req.gitWritable ?? false;
    return { spec: { kind: 'mount', lowerDir: `/ws/${id}/lower`, mntDir: `/ws/${id}/mnt`, hostUid: 600_000, gitWritable }, path: req.path, sizeMib: req.sizeMib ?? 64, gitWritable };
  }
  async pendingCount(id: string): Promise<number> {
    this.calls.push(`pending ${id}`);
    return this.pending;
  }
  async discard(id: string): Promise<void> {
    this.calls.push(`discard ${id}`);
  }
  async keep(id: string): Promise<void> {
    this.calls.push(`keep ${id}`);
  }
}

const managers: SandboxManager[] = [];
afterEach(async () => {
  await Promise.allSettled(managers.splice(0).map((m) => m.close()));
});

function harness(o: { backend?: MemoryBackendOptions; env?: Record<string, string> } = {}) {
  const config = loadConfig({ KILN_POOL: '', ...o.env });
  const backend = new MemoryBackend(o.backend);
  const hooks = new RecordingHooks();
  const specs: unknown[] = [];
  const create = backend.create.bind(backend);
  backend.create = async (spec, opts) => {
    specs.push(spec.workspace);
    return create(spec, opts);
  };
  const manager = new SandboxManager({ config, backends: new Map<BackendName, Backend>([[backend.name, backend]]), packs: memoryPacks(), workspaces: hooks });
  managers.push(manager);
  return { backend, hooks, manager, specs };
}

const code = (c: string) => (e: unknown) => isKilnError(e) && e.code === c;

describe('workspace sandboxes in the lifecycle', () => {
  it('passes the workspace to the backend under the sandbox id, and shows it in the info', async () => {
    const { manager, hooks, specs } = harness();
    const sb = await manager.create({ pack: 'python', workspace: { path: '/srv/p', gitWritable: true } });
    assert.deepEqual(hooks.calls, [`open ${sb.id}`]);
    assert.deepEqual(specs, [{ kind: 'mount', lowerDir: `/ws/${sb.id}/lower`, mntDir: `/ws/${sb.id}/mnt`, hostUid: 600_000, gitWritable: true }]);
    assert.deepEqual(sb.info().workspace, { path: '/srv/p', gitWritable: true, sizeMib: 64, restored: false });
    assert.equal(sb.info().idleTimeoutSec, 86_400, 'a workspace sandbox gets the idle timeout by default');
    assert.equal(hooks.opened.get(sb.id)?.facts.pack, 'python');
  });

  it('refuses a delete while changes are pending, unless discarded; then drops the workspace', async () => {
    const { manager, hooks, backend } = harness();
    const sb = await manager.create({ pack: 'python', workspace: { path: '/srv/p' } });
    hooks.pending = 2;
    await assert.rejects(manager.delete(sb.id), (e: unknown) => code('WORKSPACE_PENDING')(e) && /2 workspace changes/.test((e as Error).message));
    assert.equal(backend.live.size, 1, 'the refused delete left the sandbox running');
    await manager.delete(sb.id, 'deleted by request', undefined, { discard: true });
    assert.equal(backend.live.size, 0);
    assert.ok(hooks.calls.includes(`discard ${sb.id}`));
  });

  it('keeps the workspace when the service stops, and restores the sandbox under the same id', async () => {
    const { manager, hooks } = harness();
    const sb = await manager.create({ pack: 'python', workspace: { path: '/srv/p' }, labels: { team: 'a' } });
    hooks.pending = 5;
    await manager.close();
    assert.ok(hooks.calls.includes(`keep ${sb.id}`), 'kept, not discarded');
    assert.ok(!hooks.calls.includes(`discard ${sb.id}`));
    const { facts, req } = hooks.opened.get(sb.id)!;

    const next = harness();
    const r = await next.manager.restore([{ id: sb.id, request: req, facts }]);
    assert.deepEqual(r, { restored: [sb.id], failed: [] });
    const back = next.manager.get(sb.id);
    assert.equal(back.info().workspace?.restored, true);
    assert.deepEqual(back.labels, { team: 'a' });
  });

  it('a failed first start drops the new workspace; a failed restore keeps it', async () => {
    const { manager, hooks, backend } = harness();
    backend.failCreates = 2;
    await assert.rejects(manager.create({ pack: 'python', workspace: { path: '/srv/p' } }), code('BOOT_FAILED'));
    const id = hooks.calls[0]!.split(' ')[1]!;
    assert.deepEqual(hooks.calls, [`open ${id}`, `discard ${id}`]);
    hooks.calls = [];
    const r = await manager.restore([{ id: 'sb-0000000000000001', request: { path: '/srv/p' }, facts: hooks.opened.get(id)!.facts }]);
    assert.equal(r.failed.length, 1);
    assert.deepEqual(hooks.calls, ['open sb-0000000000000001'], 'not discarded: the next start tries again');
  });

  it('refuses a workspace when the service has no workspaces configured', async () => {
    const config = loadConfig({ KILN_POOL: '' });
    const backend = new MemoryBackend();
    const manager = new SandboxManager({ config, backends: new Map<BackendName, Backend>([[backend.name, backend]]), packs: memoryPacks() });
    managers.push(manager);
    await assert.rejects(manager.create({ pack: 'python', workspace: { path: '/srv/p' } }), (e: unknown) => code('WORKSPACE_FORBIDDEN')(e) && /KILN_WORKSPACE_ROOTS/.test((e as Error).message));
    assert.equal(backend.live.size, 0);
  });

  it('deletes a sandbox idle for its idleTimeoutSec, and activity postpones it', async () => {
    const { manager, backend } = harness({ backend: { script: () => ({ exitCode: 0 }) } });
    const sb = await manager.create({ pack: 'python', idleTimeoutSec: 1 });
    await sleep(600);
    await manager.runExec(sb.id, { cmd: 'true' });
    await sleep(600);
    assert.equal(backend.live.size, 1, 'the exec 0.6 s ago kept it');
    const end = Date.now() + 5000;
    while (backend.live.size && Date.now() < end) await sleep(50);
    assert.equal(backend.live.size, 0, 'deleted once idle for 1 s');
    await assert.rejects(manager.create({ pack: 'python', idleTimeoutSec: 0 }), code('INVALID_REQUEST'));
  });
});
