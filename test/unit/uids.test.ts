/** Sandbox uid allocation (backends/namespace/uids.ts) over a stand-in /proc. */
import assert from 'node:assert/strict';
import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SandboxUids } from '../../src/backends/namespace/uids.js';

class CountingUids extends SandboxUids {
  scans = 0;
  protected override scanProc(): Promise<Set<number>> {
    this.scans++;
    return super.scanProc();
  }
}

describe('sandbox uids', { skip: process.getuid?.() === 0 ? undefined : 'needs root (chown)' }, () => {
  it('shares one /proc scan among calls made together, and a release sees processes as they are after it', async () => {
    const proc = await mkdtemp(join(tmpdir(), 'kiln-uids-'));
    try {
      const base = 400_000;
      const uids = new CountingUids(base, 16, proc);
      const got = await Promise.all(Array.from({ length: 6 }, () => uids.allocate()));
      assert.equal(new Set(got).size, 6, 'six different uids');
      assert.ok(uids.scans <= 2, `${uids.scans} scans for six allocations made together`);
      // A process of got[0]'s uid appears after its sandbox's teardown: the release must see it.
      await mkdir(join(proc, '4242'));
      await chown(join(proc, '4242'), got[0]!, got[0]!);
      const [held, free] = await Promise.all([uids.release(got[0]!), uids.release(got[1]!)]);
      assert.equal(held, true, 'quarantined while a process holds it');
      assert.equal(free, false);
      assert.deepEqual(uids.quarantined, [got[0]]);
      await rm(join(proc, '4242'), { recursive: true });
      const next = await uids.allocate();
      assert.notEqual(next, undefined);
      assert.deepEqual(uids.quarantined, [], 'released once nothing holds it');
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
