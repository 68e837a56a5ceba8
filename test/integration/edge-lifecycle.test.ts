/**
 * Lifecycle edges on the real namespace backend: a pooled sandbox whose warm-up failed is deleted
 * rather than handed out, and a TTL longer than a Node timer can hold (~24.8 days) is kept.
 */
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it, mock } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnClient } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { MAX_TIMER_MS, setLongTimeout } from '../../src/core/long-timer.js';
import { cgroupNameFor } from '../../src/server/backends.js';
import { startTestServer } from '../parity/fixture.js';
import { cgroupChildren } from '../parity/leaks.js';

const root = process.getuid?.() === 0 ? undefined : 'needs root (the namespace backend)';

describe('warm pool members whose warm-up fails', { skip: root, timeout: 120_000 }, () => {
  it('are deleted, never kept in the pool', async () => {
    // The python pack (its image is built), but its command to run a file does not exist.
    const packsDir = await mkdtemp(join(tmpdir(), 'kiln-packs-'));
    await cp(join(REPO_ROOT, 'images/packs'), packsDir, { recursive: true });
    const def = JSON.parse(await readFile(join(packsDir, 'python.json'), 'utf8')) as { run: { command: string[] } };
    def.run.command = ['/nonexistent/kiln-warmup-fails', '{file}'];
    await writeFile(join(packsDir, 'python.json'), JSON.stringify(def));
    // Fork runs off: the pack's image has python3, so its pool target would start a runner too.
    const t = await startTestServer({ KILN_PACKS_DIR: packsDir, KILN_POOL: 'python=1', KILN_FORK_RUNS: '0' });
    try {
      let stats: { ready: number; failures: number } | undefined;
      for (let i = 0; i < 1500 && !(stats && stats.failures >= 1); i++) {
        stats = (await t.client.pools()).pools[0] as { ready: number; failures: number };
        if (stats.ready > 0) break;
        await sleep(20);
      }
      assert.equal(stats?.ready, 0, 'a sandbox whose warm-up failed is in the pool');
      assert.ok(stats.failures >= 1, 'the pool never counted a failed warm-up');
      // The next attempt starts after a 2 s back-off: right now no sandbox may exist.
      assert.deepEqual(cgroupChildren(cgroupNameFor(t.runDir)), [], 'the failed sandbox was not deleted');
      const sb = await t.client.sandboxes.create({ pack: 'python' });
      assert.equal(sb.fromPool, false, 'a create after a failed warm-up is a miss, not that sandbox');
      await t.client.sandboxes.delete(sb.id);
    } finally {
      await t.close();
      await rm(packsDir, { recursive: true, force: true });
    }
  });
});

describe('sandbox TTL', { skip: root, timeout: 60_000 }, () => {
  it('a TTL beyond the longest Node timer (25 days) keeps the sandbox', async () => {
    const t = await startTestServer({ KILN_MAX_TTL_SEC: String(30 * 86400) });
    try {
      const ttlSec = 25 * 86400;
      assert.ok(ttlSec * 1000 > MAX_TIMER_MS);
      const sb = await t.client.sandboxes.create({ pack: 'python', ttlSec });
      await sleep(500);
      const again = await t.client.sandboxes.get(sb.id);
      assert.equal(again.state, 'ready');
      const left = new Date(again.expiresAt).getTime() - Date.now();
      assert.ok(left > 24.9 * 86400_000, `expires in ${left} ms`);
      await t.client.sandboxes.delete(sb.id);
    } finally {
      await t.close();
    }
  });

  it('a TTL over the host maximum is a 400 naming it', async () => {
    const t = await startTestServer({ KILN_MAX_TTL_SEC: '3600' });
    try {
      await assert.rejects(t.client.sandboxes.create({ pack: 'python', ttlSec: 3601 }), (e: { status: number; message: string }) => e.status === 400 && /ttlSec/.test(e.message));
    } finally {
      await t.close();
    }
  });
});

describe('setLongTimeout', () => {
  it('fires at the deadline, not before, across several re-arms; clear() stops it', () => {
    mock.timers.enable({ apis: ['setTimeout', 'Date'] });
    try {
      let fired = 0;
      const delay = 3 * MAX_TIMER_MS + 1000;
      setLongTimeout(() => fired++, delay);
      mock.timers.tick(MAX_TIMER_MS);
      mock.timers.tick(MAX_TIMER_MS);
      mock.timers.tick(MAX_TIMER_MS);
      assert.equal(fired, 0);
      mock.timers.tick(999);
      assert.equal(fired, 0);
      mock.timers.tick(1);
      assert.equal(fired, 1);
      const cleared = setLongTimeout(() => fired++, delay);
      mock.timers.tick(MAX_TIMER_MS + 5);
      cleared.clear();
      mock.timers.tick(3 * MAX_TIMER_MS);
      assert.equal(fired, 1);
    } finally {
      mock.timers.reset();
    }
  });
});

describe('SDK request timeout', () => {
  it('refuses a requestTimeoutMs a timer cannot hold instead of timing out every request at once', () => {
    assert.throws(() => new KilnClient({ requestTimeoutMs: 30 * 86400_000 }), /requestTimeoutMs/);
    assert.throws(() => new KilnClient({ requestTimeoutMs: 0 }), /requestTimeoutMs/);
    assert.doesNotThrow(() => new KilnClient({ requestTimeoutMs: MAX_TIMER_MS }));
  });
});
