/**
 * SIGKILL the service with live sandboxes, then start it again: nothing may be left behind —
 * no sandbox process, no cgroup, no mount.
 */
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnClient } from '../../sdk/src/index.js';
import { mountsUnder, removeTree } from '../../src/images/fsutil.js';
import { cgroupNameFor } from '../../src/server/backends.js';
import { alive, cgroupChildren } from '../parity/leaks.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';

describe('crash recovery', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 180_000 }, () => {
  it('SIGKILL with live sandboxes, then restart: no processes, cgroups or mounts left', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-crash-'));
    await chmod(base, 0o755);
    const runDir = join(base, 'run');
    const port = await freePort();
    const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    let svc = spawnService(runDir, port);
    try {
      await untilHealthy(client, svc);
      const sbs = await Promise.all([0, 1, 2].map(() => client.sandboxes.create({ pack: 'shell' })));
      await client.sandboxes.exec(sbs[0]!.id, { cmd: '(setsid sleep 1000 &); sleep 1000 & echo started' });
      const pids = sbs.map((s) => s.details.pid as number);
      assert.ok(pids.every(alive));
      assert.equal(cgroupChildren(cgroupNameFor(runDir)).length, 3);

      svc.child.kill('SIGKILL');
      await new Promise((r) => svc.child.once('exit', r));
      for (let i = 0; i < 50 && pids.some(alive); i++) await sleep(100);
      assert.deepEqual(pids.filter(alive), [], 'sandbox processes die with the service');
      assert.ok((await mountsUnder(runDir)).length > 0, 'the crash left the image mount (the scan must remove it)');

      svc = spawnService(runDir, port);
      await untilHealthy(client, svc);
      assert.deepEqual(cgroupChildren(cgroupNameFor(runDir)), [], 'start-up scan removed stale cgroups');
      assert.deepEqual(await mountsUnder(join(runDir, 'namespace')), [], 'start-up scan removed stale mounts');
      assert.deepEqual(await client.sandboxes.list(), []);
    } finally {
      svc.child.kill('SIGTERM');
      await new Promise((r) => (svc.child.exitCode !== null ? r(null) : svc.child.once('exit', r)));
      await rm(base, { recursive: true, force: true });
    }
  });

  it('a second SIGTERM while stopping does not cut the graceful stop short: nothing is left for a scan', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-sigterm-'));
    await chmod(base, 0o755);
    const runDir = join(base, 'run');
    const port = await freePort();
    const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    const svc = spawnService(runDir, port);
    try {
      await untilHealthy(client, svc);
      const sbs = await Promise.all([0, 1].map(() => client.sandboxes.create({ pack: 'shell' })));
      const pids = sbs.map((s) => s.details.pid as number);
      assert.ok((await mountsUnder(runDir)).length > 0, 'the image is mounted while sandboxes run');
      const exited = new Promise<number | null>((r) => svc.child.once('exit', (code) => r(code)));
      svc.child.kill('SIGTERM');
      await sleep(20);
      svc.child.kill('SIGTERM'); // as a supervisor and a terminal both would
      assert.equal(await exited, 0, 'the service stopped on its own, not by the signal');
      assert.deepEqual(pids.filter(alive), []);
      assert.deepEqual(await mountsUnder(runDir), [], 'no image mount left behind');
      assert.deepEqual(cgroupChildren(cgroupNameFor(runDir)), [], 'no sandbox cgroup left behind');
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      await removeTree(base); // unmounts what a failed run left first
    }
  });
});
