/** A workspace sandbox takes its workspace's uid (SandboxUids.claim) instead of one from the range. */
import assert from 'node:assert/strict';
import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { SandboxUids } from '../../src/backends/namespace/uids.js';

describe('SandboxUids.claim', { skip: process.getuid?.() === 0 ? undefined : 'needs root (a fake /proc entry owned by the uid)' }, () => {
  it('takes a uid outside the range once, refuses it while held or while a process runs as it', async () => {
    const proc = await mkdtemp(join(tmpdir(), 'kiln-uids-'));
    try {
      const uids = new SandboxUids(1000, 10, proc);
      await assert.rejects(uids.claim(1005), /in the sandbox uid range/);
      assert.equal(await uids.claim(5000), 5000);
      await assert.rejects(uids.claim(5000), /in use/);
      // A process of the sandbox outlives it: the uid is quarantined, not claimable.
      await mkdir(join(proc, '42'));
      await chown(join(proc, '42'), 5000, 5000);
      uids.release(5000);
      await assert.rejects(uids.claim(5000), /in use/);
      await uids.allocate(); // sees only the range's processes: must not free the workspace's uid
      assert.deepEqual(uids.quarantined, [5000]);
      await rm(join(proc, '42'), { recursive: true });
      assert.equal(await uids.claim(5000), 5000, 'free again once nothing runs as it');
      uids.release(5000);
      assert.equal(await uids.claim(5000), 5000, 'a claim after the release scans: nothing runs as it');
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
