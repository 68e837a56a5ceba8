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
      uids.release(got[0]!);
      uids.release(got[1]!);
      await uids.settle();
      assert.deepEqual(uids.quarantined, [got[0]], 'quarantined while a process holds it');
      await rm(join(proc, '4242'), { recursive: true });
      const next = await uids.allocate();
      assert.notEqual(next, undefined);
      assert.deepEqual(uids.quarantined, [], 'released once nothing holds it');
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });

  it('reuses a recent scan for allocations, never for a uid released after it began; releases wait for the next scan', async () => {
    const proc = await mkdtemp(join(tmpdir(), 'kiln-uids-'));
    try {
      const base = 410_000;
      // A survivor of a crashed instance runs as the range's first uid.
      await mkdir(join(proc, '4243'));
      await chown(join(proc, '4243'), base, base);
      const uids = new CountingUids(base, 3, proc);
      const a = await uids.allocate();
      const b = await uids.allocate();
      assert.deepEqual([a, b, uids.scans], [base + 1, base + 2, 1], "one scan for both; the survivor's uid skipped");
      uids.release(a);
      assert.equal(uids.scans, 1, 'a release scans nothing');
      // The recent scan began before a's release: it cannot free a, so the allocation looks again.
      assert.equal(await uids.allocate(), a);
      assert.equal(uids.scans, 2);
      // b's sandbox left a process behind: the scan after its release quarantines b.
      await mkdir(join(proc, '4244'));
      await chown(join(proc, '4244'), b, b);
      uids.release(b);
      await assert.rejects(uids.allocate(), /no free sandbox uid left.*1 quarantined/);
      assert.deepEqual(uids.quarantined, [b]);
      await rm(join(proc, '4244'), { recursive: true });
      assert.equal(await uids.allocate(), b, 'a scan after the quarantine frees it');
      assert.deepEqual(uids.quarantined, []);
      assert.equal(uids.scans, 4);
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
