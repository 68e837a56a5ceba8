/** Which CPUs a sandbox gets (core/cpu-sets.ts): whole CPUs for its limit, spread over the host. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { allowedCpus, CpuSpreader, formatCpuList, parseCpuList, visibleCpuCount } from '../../src/core/cpu-sets.js';

describe('cpu sets', () => {
  it('reads and writes the kernel list format', () => {
    assert.deepEqual(parseCpuList('0-2,5,7-8\n'), [0, 1, 2, 5, 7, 8]);
    assert.deepEqual(parseCpuList('3'), [3]);
    assert.equal(formatCpuList([0, 1, 2, 5, 7, 8]), '0-2,5,7-8');
    assert.equal(formatCpuList([4]), '4');
    assert.throws(() => parseCpuList('a-b'));
    assert.ok(allowedCpus().length >= 1);
  });

  it('shows a limit as whole CPUs: a fraction rounds up, capped at what the host has', () => {
    assert.deepEqual(
      [0.1, 0.5, 1, 1.01, 2, 3, 64].map((c) => visibleCpuCount(c, 4)),
      [1, 1, 1, 2, 2, 3, 4],
    );
  });

  it('spreads sandboxes over the CPUs: least held first, then the longest unused', () => {
    const s = new CpuSpreader([0, 1, 2, 3]);
    const a = s.acquire(1);
    const b = s.acquire(1);
    const c = s.acquire(2);
    assert.deepEqual([a, b, c], [[0], [1], [2, 3]]);
    assert.deepEqual(s.acquire(0.5), [0], 'every CPU held once: the one handed out longest ago');
    s.release(b);
    assert.deepEqual(s.acquire(1), [1], 'a released CPU is the least held');
    assert.deepEqual(s.load(), { 0: 2, 1: 1, 2: 1, 3: 1 });
    assert.deepEqual(s.acquire(8), [0, 1, 2, 3], 'never more than the host has');
  });

  it('alternates one-CPU sandboxes made one after another on a two-CPU host', () => {
    const s = new CpuSpreader([0, 1]);
    const seen: number[] = [];
    for (let i = 0; i < 4; i++) {
      const cpus = s.acquire(1);
      seen.push(...cpus);
      s.release(cpus);
    }
    assert.deepEqual(seen, [0, 1, 0, 1]);
  });
});
