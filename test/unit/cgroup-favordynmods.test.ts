/**
 * favorDynamicModifications(): finds the cgroup2 mount in mountinfo and remounts it with its own
 * options plus favordynmods (as root, on the real mount: kiln serve does the same at start).
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { favorDynamicModifications, favordynmodsOn } from '../../src/core/cgroups.js';

const cgroup2Line = (super_: string): string => `41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 ${super_}`;
const v1Line = '35 31 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory';

describe('favordynmods', () => {
  it('already on: nothing is remounted; no cgroup2 mount: a clear failure', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-mi-'));
    try {
      const mi = join(dir, 'mountinfo');
      writeFileSync(mi, `${v1Line}\n${cgroup2Line('rw,nsdelegate,favordynmods')}\n`);
      assert.deepEqual(await favorDynamicModifications(mi), { state: 'already', mount: '/sys/fs/cgroup/unified' });
      assert.equal(favordynmodsOn(mi), true);
      writeFileSync(mi, `${v1Line}\n${cgroup2Line('rw,nsdelegate')}\n`);
      assert.equal(favordynmodsOn(mi), false, "kiln doctor's answer");
      writeFileSync(mi, `${v1Line}\n`);
      const r = await favorDynamicModifications(mi);
      assert.equal(r.state, 'failed');
      assert.match((r as { error: string }).error, /no cgroup2 hierarchy/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('on the real cgroup2 mount: switched on, and its other options kept', { skip: process.getuid?.() === 0 ? undefined : 'needs root' }, async () => {
    const find = () =>
      readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .find((l) => l.split(' - ')[1]?.startsWith('cgroup2 '));
    const before = find();
    if (!before) return; // a v1-only host: the first test covers the answer
    const superBefore = before.split(' - ')[1]!.split(' ')[2]!.split(',');
    const r = await favorDynamicModifications();
    if (r.state === 'failed') assert.fail(r.error);
    const superAfter = find()!.split(' - ')[1]!.split(' ')[2]!.split(',');
    assert.ok(superAfter.includes('favordynmods'));
    for (const o of superBefore) assert.ok(superAfter.includes(o), `option ${o} kept`);
    assert.deepEqual(await favorDynamicModifications(), { state: 'already', mount: r.mount });
  });
});
