/**
 * #12.9: delete never frees a host uid a process still runs as. A process of the sandbox's uid
 * outside its cgroup (standing in for one that survived SIGKILL) keeps the uid quarantined; once
 * it is gone the uid is handed out again.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { createNamespaceBackend } from '../../src/backends/namespace/namespace-backend.js';
import type { BackendSandbox } from '../../src/core/backend.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';

describe('sandbox uid quarantine', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  it('keeps a uid out of use while any process holds it, and reuses it once none does', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-uid-'));
    // Two uids of our own, away from the 200000.. range other kiln instances on this host use.
    const uidBase = 330_000 + (process.pid % 10_000) * 2;
    const backend = createNamespaceBackend({
      runDir,
      agentPath: resolve(REPO_ROOT, 'build/kiln-agent'),
      maxPids: 256,
      cgroupName: `kiln-test-${runDir.split('-').pop()}`,
      uidBase,
      uidCount: 2,
    });
    const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const create = (id: string) =>
      backend.create({ id, pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env }, cpus: 1, memoryMib: 64, diskMib: 64 }, { readyTimeoutMs: 30_000 });
    const live: BackendSandbox[] = [];
    let survivor: ReturnType<typeof spawn> | undefined;
    try {
      const a = await create('a');
      const uidA = a.details.hostUid as number;
      assert.equal(uidA, uidBase);
      survivor = spawn('sleep', ['1000'], { uid: uidA, gid: uidA, stdio: 'ignore' });
      await once(survivor, 'spawn');
      await a.destroy();
      assert.equal((await backend.probe()).info?.quarantinedUids, 1);

      const b = await create('b');
      live.push(b);
      assert.equal(b.details.hostUid, uidBase + 1);
      await assert.rejects(create('c'), /no free sandbox uid left.*1 quarantined/, "the survivor's uid is not handed out");

      survivor.kill('SIGKILL');
      await once(survivor, 'exit');
      const c = await create('c');
      live.push(c);
      assert.equal(c.details.hostUid, uidA, 'released once no process holds it');
      assert.equal((await backend.probe()).info?.quarantinedUids, 0);
    } finally {
      survivor?.kill('SIGKILL');
      await Promise.allSettled(live.map((s) => s.destroy()));
      await backend.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
