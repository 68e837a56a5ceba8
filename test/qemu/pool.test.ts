/**
 * A warm pool of QEMU sandboxes on a service whose default backend is namespace
 * (`KILN_POOL=qemu/python=1`): `/v1/run` with `backend: "qemu"` is served from it, and the member
 * is replaced. Through the real server, real QEMU (TCG here) and the real python pack.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestServer } from '../parity/fixture.js';
import { qemuProcessesUnder, skipReason } from './fixture.js';

describe('warm pool on the qemu backend', { skip: await skipReason(), timeout: 240_000 }, () => {
  it('fills a qemu pool named in KILN_POOL beside the default backend and serves /v1/run from it', async () => {
    const t = await startTestServer({ KILN_POOL: 'qemu/python=1' });
    try {
      const stats = async () => (await t.client.pools()).pools as Array<{ key: { backend: string; pack: string }; ready: number; hits: number }>;
      const filled = async () => {
        for (let i = 0; i < 600; i++) {
          const [p] = await stats();
          if (p?.ready === 1) return;
          await sleep(100);
        }
        throw new Error('the qemu pool never filled');
      };
      assert.deepEqual(
        (await stats()).map((p) => `${p.key.backend}/${p.key.pack}`),
        ['qemu/python'],
      );
      await filled();
      const r = await t.client.run({ pack: 'python', backend: 'qemu', code: 'import os; print(6*7, os.getuid())' });
      assert.equal(r.stdout, '42 1000\n', JSON.stringify(r));
      assert.ok(r.createMs < 100, `a pool hit should not boot anything (createMs ${r.createMs})`);
      assert.equal((await stats())[0]!.hits, 1);
      await filled(); // replaced after the run was answered
    } finally {
      await t.close();
    }
    assert.deepEqual(await qemuProcessesUnder(t.runDir), [], 'no QEMU left after shutdown');
  });
});
