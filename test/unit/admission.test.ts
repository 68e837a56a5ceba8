import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Admission } from '../../src/core/admission.js';
import type { KilnError } from '../../src/core/errors.js';

describe('admission control', () => {
  it('admits up to capacity at once, then queues in FIFO order', async () => {
    const a = new Admission({ capacity: 2, queueLength: 10, queueTimeoutMs: 5000 });
    const r1 = await a.acquire();
    await a.acquire();
    const order: number[] = [];
    const w1 = a.acquire().then((r) => {
      order.push(1);
      return r;
    });
    const w2 = a.acquire().then((r) => {
      order.push(2);
      return r;
    });
    assert.deepEqual(a.stats, { inUse: 2, capacity: 2, queued: 2 });
    r1();
    (await w1)();
    (await w2)();
    assert.deepEqual(order, [1, 2]);
    assert.equal(a.stats.queued, 0);
  });

  it('answers AT_CAPACITY (429) with Retry-After when the queue is full', async () => {
    const a = new Admission({ capacity: 1, queueLength: 1, queueTimeoutMs: 5000 });
    const release = await a.acquire();
    const queued = a.acquire();
    await assert.rejects(a.acquire(), (e: KilnError) => e.code === 'AT_CAPACITY' && e.status === 429 && e.retryAfterSec !== undefined);
    release();
    (await queued)();
  });

  it('answers QUEUE_TIMEOUT (503) with Retry-After past the deadline', async () => {
    const a = new Admission({ capacity: 1, queueLength: 5, queueTimeoutMs: 30 });
    await a.acquire();
    await assert.rejects(a.acquire(), (e: KilnError) => e.code === 'QUEUE_TIMEOUT' && e.status === 503 && (e.retryAfterSec ?? 0) >= 1);
    assert.equal(a.stats.queued, 0);
  });

  it('a release is idempotent and never frees two slots', async () => {
    const a = new Admission({ capacity: 1, queueLength: 5, queueTimeoutMs: 1000 });
    const r = await a.acquire();
    r();
    r();
    assert.equal(a.stats.inUse, 0);
  });

  it('close rejects every waiter with SHUTTING_DOWN', async () => {
    const a = new Admission({ capacity: 1, queueLength: 5, queueTimeoutMs: 10_000 });
    await a.acquire();
    const w = a.acquire();
    a.close();
    await assert.rejects(w, (e: KilnError) => e.code === 'SHUTTING_DOWN');
  });
});
