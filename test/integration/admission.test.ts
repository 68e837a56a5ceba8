/** A burst far over capacity: every create completes or is refused cleanly, and nothing leaks. */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { KilnError } from '../../sdk/src/index.js';
import { mountsUnder } from '../../src/images/fsutil.js';
import { cgroupNameFor } from '../../src/server/backends.js';
import { startTestServer } from '../parity/fixture.js';
import { alive, cgroupChildren, cgroupParent } from '../parity/leaks.js';

describe('admission under a burst', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  it('200 concurrent creates at capacity 20: each completes or gets 429/503 with Retry-After; no orphans', async () => {
    const t = await startTestServer({ KILN_MAX_SANDBOXES: '20', KILN_CREATE_QUEUE: '60', KILN_CREATE_QUEUE_TIMEOUT_MS: '4000' });
    const pids: number[] = [];
    try {
      const outcomes = await Promise.all(
        Array.from({ length: 200 }, async () => {
          try {
            const sb = await t.client.sandboxes.create({ pack: 'shell', memoryMib: 64 });
            pids.push(sb.details.pid as number);
            const r = await t.client.sandboxes.exec(sb.id, { cmd: 'echo ok' });
            assert.equal(r.stdout, 'ok\n');
            await t.client.sandboxes.delete(sb.id);
            return 'ok';
          } catch (e) {
            if (e instanceof KilnError && (e.status === 429 || e.status === 503)) {
              assert.ok(e.retryAfterSec !== undefined && e.retryAfterSec >= 1, 'Retry-After present');
              return String(e.status);
            }
            throw e;
          }
        }),
      );
      const count = (k: string) => outcomes.filter((o) => o === k).length;
      assert.equal(count('ok') + count('429') + count('503'), 200);
      assert.ok(count('ok') >= 20, `at least a full capacity's worth completed (${count('ok')})`);
      assert.ok(count('429') > 0, 'the bounded queue refused some at once');
      assert.deepEqual(await t.client.sandboxes.list(), []);
      assert.deepEqual(cgroupChildren(cgroupNameFor(t.runDir)), [], 'no sandbox cgroup left');
      const survivors = pids.filter(alive);
      assert.deepEqual(survivors, [], 'no sandbox process left');
    } finally {
      await t.close();
    }
    assert.deepEqual(await mountsUnder(t.runDir), [], 'no mount left after shutdown');
    assert.equal(existsSync(cgroupParent(cgroupNameFor(t.runDir))), false, 'the instance cgroup is removed on shutdown');
  });
});
