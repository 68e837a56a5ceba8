/**
 * Closing the namespace backend while creates are under way: they finish or fail, every sandbox
 * is stopped, no cgroup (parent included, in every controller) is left, and later creates are
 * refused. A pool refill in flight at SIGTERM used to leave the instance's parent cgroups behind.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { createNamespaceBackend } from '../../src/backends/namespace/namespace-backend.js';
import { detectCgroupLayout } from '../../src/core/cgroups.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { resolveImage } from '../../src/images/index.js';
import { alive } from '../parity/leaks.js';

describe('namespace backend close', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  it('waits for creates under way, stops them, removes every parent cgroup, and refuses new creates', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-ns-close-'));
    const cgroupName = `kiln-test-${runDir.split('-').pop()}`;
    const backend = createNamespaceBackend({ runDir, agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), maxPids: 256, cgroupName });
    const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    const spec = (id: string) => ({ id, pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env }, cpus: 1, memoryMib: 64, diskMib: 64 });
    try {
      const ready = await backend.create(spec('ready'), { readyTimeoutMs: 30_000 });
      const inFlight = [backend.create(spec('flight-a'), { readyTimeoutMs: 30_000 }), backend.create(spec('flight-b'), { readyTimeoutMs: 30_000 })];
      await backend.close();
      const pids = [ready.details.pid as number];
      for (const r of await Promise.allSettled(inFlight)) if (r.status === 'fulfilled') pids.push(r.value.details.pid as number);
      assert.deepEqual(pids.filter(alive), [], 'no sandbox process outlives close()');
      for (const dir of Object.values(detectCgroupLayout(cgroupName).parents)) assert.equal(existsSync(dir), false, `${dir} is left`);
      await assert.rejects(backend.create(spec('late'), { readyTimeoutMs: 30_000 }), { code: 'SHUTTING_DOWN' });
    } finally {
      await backend.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
    }
  });

  it('waits for a destroy under way (a delete right before shutdown) before removing the parents', async () => {
    const runDir = await mkdtemp(join(tmpdir(), 'kiln-ns-close-'));
    const cgroupName = `kiln-test-${runDir.split('-').pop()}`;
    const backend = createNamespaceBackend({ runDir, agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), maxPids: 256, cgroupName });
    const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
    try {
      const sb = await backend.create(
        { id: 'leaving', pack: { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env }, cpus: 1, memoryMib: 64, diskMib: 64 },
        { readyTimeoutMs: 30_000 },
      );
      const destroying = sb.destroy();
      await backend.close();
      for (const dir of Object.values(detectCgroupLayout(cgroupName).parents)) assert.equal(existsSync(dir), false, `${dir} is left`);
      await destroying;
      assert.equal(alive(sb.details.pid as number), false);
    } finally {
      await backend.close().catch(() => undefined);
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
