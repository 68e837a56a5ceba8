/**
 * SandboxManager across a restart of the service, with an in-memory backend that can keep its
 * sandboxes: a graceful stop with keepSandboxes detaches them (records stay), the next manager
 * reattaches those alive under the same id, owner, TTL, labels and env; records whose sandbox died
 * or whose key was revoked end as lost with the reason; a live sandbox without a record is deleted.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Backend, BackendName, BackendSandbox, ReattachReport } from '../../src/core/backend.js';
import { loadConfig } from '../../src/core/config.js';
import { SandboxManager } from '../../src/core/manager.js';
import type { Owner } from '../../src/core/quotas.js';
import { MemoryBackend, type MemorySandbox, memoryPacks } from './memory-backend.js';

/** Keeps detached sandboxes "running" for the next instance; `report` is what its reattach() answers. */
class KeepingBackend extends MemoryBackend {
  readonly detached: string[] = [];
  report: ReattachReport = { alive: [], lost: [] };

  override async create(...a: Parameters<MemoryBackend['create']>): Promise<BackendSandbox> {
    const sb = (await super.create(...a)) as MemorySandbox & { detach?: () => Promise<void> };
    sb.detach = async () => {
      this.detached.push(sb.id);
    };
    return sb;
  }

  async reattach(): Promise<ReattachReport> {
    return this.report;
  }
}

describe('SandboxManager.reattach', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  function manager(backend: Backend, runDir: string): SandboxManager {
    const config = loadConfig({ KILN_POOL: '', KILN_RUN_DIR: runDir });
    return new SandboxManager({ config, backends: new Map<BackendName, Backend>([[backend.name, backend]]), packs: memoryPacks() });
  }

  it('reattaches the live ones with their facts, ends dead, revoked and unrecorded ones, and keeps records in step', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-reattach-'));
    dirs.push(runDir);
    const records = async () => (await readdir(join(runDir, 'sandboxes')).catch(() => [] as string[])).sort();
    const keyA: Owner = { keyId: 'key-a', limits: {} };
    const keyB: Owner = { keyId: 'key-b', limits: {} };

    const first = new KeepingBackend();
    const m1 = manager(first, runDir);
    const a = await m1.create({ pack: 'python', labels: { team: 'a' }, env: { FOO: 'bar' }, ttlSec: 600 }, undefined, keyA);
    const b = await m1.create({ pack: 'python' }, undefined, keyB);
    const c = await m1.create({ pack: 'shell' });
    for (let i = 0; i < 100 && (await records()).length < 3; i++) await sleep(5);
    assert.deepEqual(await records(), [a.id, b.id, c.id].map((id) => `${id}.json`).sort());
    await m1.close(true);
    assert.deepEqual(first.detached.sort(), [a.id, b.id, c.id].sort(), 'a keeping stop detaches, never destroys');
    assert.equal(first.all.filter((s) => s.destroyed).length, 0);
    assert.equal((await records()).length, 3, 'the records stay for the next start');

    // The next start: c died meanwhile; an unrecorded sandbox (a pool member) is alive too.
    const orphan = (await first.create({ id: 'sb-orphan', pack: (await memoryPacks().image('python'))!, cpus: 1, memoryMib: 64, diskMib: 64 }, { readyTimeoutMs: 1000 })) as MemorySandbox;
    const [sa, sbB] = [first.live.get(a.id)!, first.live.get(b.id)!];
    const second = new KeepingBackend();
    second.report = { alive: [sa, sbB, orphan], lost: [{ id: c.id, reason: 'its processes ended while the service was not running' }] };
    const m2 = manager(second, runDir);
    const r = await m2.reattach((keyId) => (keyId === 'key-a' ? keyA : 'revoked'));
    assert.deepEqual(r.reattached, [a.id]);
    assert.deepEqual(
      r.lost.map((l) => [l.id, l.reason]).sort(),
      [
        [b.id, 'its API key was revoked'],
        [c.id, 'its processes ended while the service was not running'],
      ].sort(),
    );
    assert.ok(sbB.destroyed && orphan.destroyed && !sa.destroyed, "the revoked key's sandbox and the orphan are deleted");
    const back = m2.get(a.id, 'key-a');
    assert.deepEqual(back.labels, { team: 'a' });
    assert.deepEqual(back.env, { FOO: 'bar' });
    assert.equal(back.expiresAt.toISOString(), a.expiresAt.toISOString());
    assert.equal(back.createdAt.toISOString(), a.createdAt.toISOString());
    assert.equal(m2.count, 1);
    assert.deepEqual(await records(), [`${a.id}.json`]);

    await m2.runExec(a.id, { cmd: 'true' });
    await m2.close();
    assert.ok(sa.destroyed, 'a stop without keepSandboxes deletes');
    assert.deepEqual(await records(), []);
  });
});
