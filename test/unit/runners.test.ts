/**
 * The runners of fork runs (src/core/runners.ts), with stand-in sandboxes: one run at a time per
 * runner, reuse only when the run was forked, the idle cap, retirement by runs and by age, dead
 * runners never handed out, prestart, and close deleting every runner, busy ones when they return.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BackendSandbox } from '../../src/core/backend.js';
import { type RunnerKey, Runners } from '../../src/core/runners.js';

interface Fake extends BackendSandbox {
  destroyed: boolean;
  die(): void;
}

let seq = 0;
function fake(): Fake {
  const exits: Array<(r: string) => void> = [];
  const sb = {
    id: `runner-${++seq}`,
    destroyed: false,
    details: {},
    agent: {} as BackendSandbox['agent'],
    usage: async () => ({}),
    onExit: (l: (r: string) => void) => exits.push(l),
    destroy: async () => {
      sb.destroyed = true;
    },
    die: () => {
      for (const l of exits) l('died');
    },
  };
  return sb as unknown as Fake;
}

const KEY: RunnerKey = { pack: 'python', cpus: 1, memoryMib: 512, diskMib: 1024 };

function runners(o: Partial<ConstructorParameters<typeof Runners>[0]> = {}) {
  const started: Fake[] = [];
  const r = new Runners({
    start: async () => {
      const f = fake();
      started.push(f);
      return f;
    },
    maxIdle: 2,
    maxRuns: 100,
    maxAgeMs: 60_000,
    ...o,
  });
  return { r, started };
}

describe('runners of fork runs', () => {
  it('hands a runner to one run at a time and takes it back only when the run was forked', async () => {
    const { r, started } = runners();
    const a = await r.borrow(KEY);
    const b = await r.borrow(KEY);
    assert.notEqual(a.sandbox, b.sandbox, 'two runs at once get two runners');
    assert.deepEqual([a.warm, b.warm], [false, false]);
    a.giveBack(true);
    b.giveBack(false);
    assert.equal((b.sandbox as Fake).destroyed, true, 'a runner whose run was not forked is deleted');
    const c = await r.borrow(KEY);
    assert.equal(c.sandbox, a.sandbox, 'the forked one is reused');
    assert.equal(c.warm, true);
    c.giveBack(true);
    c.giveBack(false); // a second give-back changes nothing
    assert.equal((a.sandbox as Fake).destroyed, false);
    assert.equal(started.length, 2);
    assert.deepEqual(
      r.stats().map(({ idle, busy, hits, misses, retired }) => ({ idle, busy, hits, misses, retired })),
      [{ idle: 1, busy: 0, hits: 1, misses: 2, retired: 1 }],
    );
    await r.close();
  });

  it('keeps at most maxIdle runners idle; more coming back are deleted', async () => {
    const { r } = runners({ maxIdle: 2 });
    const held = await Promise.all([r.borrow(KEY), r.borrow(KEY), r.borrow(KEY)]);
    for (const h of held) h.giveBack(true);
    assert.equal(r.stats()[0]!.idle, 2);
    assert.equal(held.filter((h) => (h.sandbox as Fake).destroyed).length, 1);
    await r.close();
  });

  it('retires a runner after maxRuns runs, and never hands out a dead one', async () => {
    const { r } = runners({ maxRuns: 2 });
    const first = await r.borrow(KEY);
    first.giveBack(true);
    const second = await r.borrow(KEY);
    assert.equal(second.sandbox, first.sandbox);
    second.giveBack(true);
    assert.equal((first.sandbox as Fake).destroyed, true, 'two runs: retired');
    const third = await r.borrow(KEY);
    third.giveBack(true);
    (third.sandbox as Fake).die();
    const fourth = await r.borrow(KEY);
    assert.notEqual(fourth.sandbox, third.sandbox, 'the dead one is not handed out');
    assert.equal((third.sandbox as Fake).destroyed, true, 'and is deleted');
    fourth.giveBack(true);
    await r.close();
  });

  it('starts prestart runners, and close deletes idle ones at once and busy ones when they return', async () => {
    const { r, started } = runners({ prestart: [{ key: KEY, count: 5 }], maxIdle: 2 });
    r.start();
    for (let i = 0; i < 100 && r.stats()[0]?.idle !== 2; i++) await sleep(5);
    assert.equal(r.stats()[0]!.idle, 2, 'prestart is capped by maxIdle');
    const busy = await r.borrow(KEY);
    await r.close();
    assert.equal(
      started.filter((s) => s !== busy.sandbox).every((s) => s.destroyed),
      true,
    );
    assert.equal((busy.sandbox as Fake).destroyed, false);
    busy.giveBack(true);
    assert.equal((busy.sandbox as Fake).destroyed, true);
    await assert.rejects(r.borrow(KEY), /closed/);
  });
});
