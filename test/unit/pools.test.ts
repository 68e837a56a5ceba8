import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackendSandbox } from '../../src/core/backend.js';
import { type PoolKey, WarmPools } from '../../src/core/pools.js';

/** A stand-in sandbox: the pool's bookkeeping is under test here, not the backend. */
function fakeSandbox(id: string, destroyed: Set<string>): BackendSandbox & { die(): void } {
  const listeners: Array<(r: string) => void> = [];
  return {
    id,
    details: {},
    agent: undefined as never,
    usage: async () => ({}),
    onExit: (l) => {
      listeners.push(l);
    },
    destroy: async () => {
      destroyed.add(id);
    },
    die: () => {
      for (const l of listeners) l('died');
    },
  };
}

const key: PoolKey = { backend: 'namespace', pack: 'python', cpus: 1, memoryMib: 256, diskMib: 64 };

async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await sleep(5);
  }
}

describe('warm pools', () => {
  it('fills to target, hands each sandbox out once, and refills after use', async () => {
    let n = 0;
    const destroyed = new Set<string>();
    const pools = new WarmPools({ targets: [{ key, target: 2 }], start: async () => fakeSandbox(`s${++n}`, destroyed), maxAgeMs: 60_000, refillConcurrency: 1 });
    pools.start();
    await until(() => pools.stats()[0]!.ready === 2);
    const a = pools.take(key)!;
    const b = pools.take(key)!;
    assert.notEqual(a.id, b.id);
    const c = pools.take(key);
    assert.ok(c === undefined || (c.id !== a.id && c.id !== b.id), 'never the same sandbox twice');
    await until(() => pools.stats()[0]!.ready === 2);
    const s = pools.stats()[0]!;
    assert.ok(s.hits >= 2);
    await pools.close();
  });

  it("starts a hit's replacement when it is released, or after refillAfterHitMs, not beside the request", async () => {
    let n = 0;
    const destroyed = new Set<string>();
    const pools = new WarmPools({ targets: [{ key, target: 1 }], start: async () => fakeSandbox(`s${++n}`, destroyed), maxAgeMs: 60_000, refillConcurrency: 1, refillAfterHitMs: 300 });
    pools.start();
    await until(() => pools.stats()[0]!.ready === 1);
    assert.ok(pools.take(key));
    await sleep(100);
    assert.deepEqual([pools.stats()[0]!.ready, pools.stats()[0]!.starting, n], [0, 0, 1], 'nothing starts while the hit is in use');
    pools.released(key);
    await until(() => pools.stats()[0]!.ready === 1);
    assert.equal(n, 2);
    // A hit that is never released is replaced after refillAfterHitMs (the first hit's timer,
    // harmless now, has run out by then).
    await sleep(350);
    const t0 = Date.now();
    assert.ok(pools.take(key));
    await until(() => pools.stats()[0]!.ready === 1);
    assert.ok(Date.now() - t0 >= 250, `replaced after ${Date.now() - t0} ms`);
    await pools.close();
  });

  it('a miss for an unpooled key returns undefined', async () => {
    const pools = new WarmPools({
      targets: [],
      start: async () => {
        throw new Error('unused');
      },
      maxAgeMs: 1000,
      refillConcurrency: 1,
    });
    assert.equal(pools.take(key), undefined);
    await pools.close();
  });

  it('recycles members past their max age', async () => {
    let n = 0;
    const destroyed = new Set<string>();
    const pools = new WarmPools({ targets: [{ key, target: 1 }], start: async () => fakeSandbox(`s${++n}`, destroyed), maxAgeMs: 50, refillConcurrency: 1 });
    pools.start();
    await until(() => pools.stats()[0]!.ready === 1);
    // The sweep runs at max(1 s, maxAge/4): wait for one.
    await until(() => destroyed.has('s1'), 3000);
    await until(() => pools.stats()[0]!.ready === 1);
    const next = pools.take(key)!;
    assert.notEqual(next.id, 's1');
    await pools.close();
  });

  it('drops members that die while idle', async () => {
    let n = 0;
    const made: Array<ReturnType<typeof fakeSandbox>> = [];
    const destroyed = new Set<string>();
    const pools = new WarmPools({
      targets: [{ key, target: 1 }],
      start: async () => {
        const s = fakeSandbox(`s${++n}`, destroyed);
        made.push(s);
        return s;
      },
      maxAgeMs: 60_000,
      refillConcurrency: 1,
    });
    pools.start();
    await until(() => pools.stats()[0]!.ready === 1);
    made[0]!.die();
    const got = pools.take(key);
    assert.ok(got === undefined || got.id !== 's1');
    await pools.close();
  });

  it('drains on close: every member, including ones still starting, is destroyed', async () => {
    let n = 0;
    const destroyed = new Set<string>();
    const pools = new WarmPools({
      targets: [{ key, target: 3 }],
      start: async () => {
        await sleep(20);
        return fakeSandbox(`s${++n}`, destroyed);
      },
      maxAgeMs: 60_000,
      refillConcurrency: 2,
    });
    pools.start();
    await until(() => pools.stats()[0]!.ready >= 1);
    await pools.close();
    assert.equal(destroyed.size, n, 'all created members destroyed');
    assert.equal(pools.take(key), undefined);
  });

  it('backs off and counts failures when starting fails', async () => {
    const pools = new WarmPools({
      targets: [{ key, target: 1 }],
      start: async () => {
        throw new Error('image missing');
      },
      maxAgeMs: 60_000,
      refillConcurrency: 1,
    });
    pools.start();
    await until(() => pools.stats()[0]!.failures >= 1);
    await sleep(100);
    assert.ok(pools.stats()[0]!.failures <= 2, 'no busy retry loop');
    await pools.close();
  });
  it('refills one at a time while it keeps up, wider while requests miss or it is under half full', async () => {
    let n = 0;
    let running = 0;
    let peak = 0;
    const destroyed = new Set<string>();
    const start = async () => {
      running++;
      peak = Math.max(peak, running);
      await sleep(30);
      running--;
      return fakeSandbox(`s${++n}`, destroyed);
    };
    const pools = new WarmPools({ targets: [{ key, target: 8 }], start, maxAgeMs: 60_000, refillConcurrency: 1, maxRefillConcurrency: 4, refillAfterHitMs: 0 });
    pools.start();
    await until(() => pools.stats()[0]!.ready === 8);
    assert.equal(peak, 4, 'an empty pool fills 4 at a time');
    // Steady demand: one taken at a time, the pool never below half and no miss: one refill at a time.
    peak = 0;
    for (let i = 0; i < 3; i++) {
      pools.take(key);
      await until(() => pools.stats()[0]!.ready === 8);
    }
    assert.equal(peak, 1, 'one at a time while it keeps up');
    // A burst past the pool: misses, and the refill goes wide.
    peak = 0;
    for (let i = 0; i < 10; i++) pools.take(key);
    await until(() => pools.stats()[0]!.ready === 8);
    assert.equal(peak, 4, 'wide after misses');
    await pools.close();
  });
});
