/** Warm pools against the real backend: hits are fresh, never reused, warmed, and drained. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestServer } from '../parity/fixture.js';
import { alive } from '../parity/leaks.js';

describe('warm pool on the namespace backend', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 120_000 }, () => {
  it('hands out fresh, warmed sandboxes once each and refills', async () => {
    const t = await startTestServer({ KILN_POOL: 'python=2' });
    const pids: number[] = [];
    try {
      const ready = async () => {
        for (let i = 0; i < 500; i++) {
          const p = (await t.client.pools()).pools[0] as { ready: number };
          if (p.ready === 2) return;
          await sleep(20);
        }
        throw new Error('pool never filled');
      };
      await ready();
      const a = await t.client.sandboxes.create({ pack: 'python' });
      pids.push(a.details.pid as number);
      assert.equal(a.fromPool, true);
      assert.ok(a.readyMs < 50, `pool hit took ${a.readyMs} ms`);
      const ls = await t.client.sandboxes.exec(a.id, { cmd: 'ls -A /workspace; ls /tmp | wc -l' });
      assert.equal(ls.stdout, '0\n', 'warm-up left nothing behind');
      await t.client.sandboxes.writeFile(a.id, '/workspace/secret', 'from user A');
      await t.client.sandboxes.delete(a.id);
      await ready();
      const seen = new Set([a.id]);
      for (let i = 0; i < 3; i++) {
        const b = await t.client.sandboxes.create({ pack: 'python' });
        pids.push(b.details.pid as number);
        assert.ok(!seen.has(b.id), 'never the same sandbox twice');
        seen.add(b.id);
        const r = await t.client.sandboxes.exec(b.id, { cmd: 'cat /workspace/secret 2>&1 || true' });
        assert.match(r.stdout, /No such file/);
        await t.client.sandboxes.delete(b.id);
      }
      const run = await t.client.run({ pack: 'python', code: 'print(6*7)' });
      assert.equal(run.stdout, '42\n');
      const stats = (await t.client.pools()).pools[0] as { hits: number };
      assert.ok(stats.hits >= 2);
      assert.match(await t.client.metricsText(), /kiln_create_seconds_count\{backend="namespace",pack="python",pool="hit"\} [1-9]/);
    } finally {
      await t.close();
    }
    assert.deepEqual(pids.filter(alive), [], 'no sandbox process outlives the service (pool drained)');
  });
});
