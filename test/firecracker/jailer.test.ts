/** Jailer argument building and the mapping of sandbox limits to cgroup v1/v2 values. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cgroupLimits, jailerArgv, jailRoot, UidPool, vmmMemoryLimitBytes } from '../../src/backends/firecracker/jailer.js';

const settings = {
  jailerPath: '/usr/local/bin/jailer',
  chrootBaseDir: '/run/kiln/firecracker/jail',
  cgroupVersion: 2 as const,
  parentCgroup: 'kiln-firecracker',
  uidBase: 300_000,
  uidCount: 2,
  gid: 300_000,
  netns: true,
};

test('jailer argv: id, exec file, uid/gid, chroot base, cgroup version + limits, netns, then firecracker args', () => {
  const argv = jailerArgv(settings, {
    id: 'sb1',
    firecrackerPath: '/usr/local/bin/firecracker',
    uid: 300_001,
    gid: 300_000,
    limits: { vcpus: 2, memoryMib: 512 },
    netnsPath: '/var/run/netns/kiln-fc-sb1',
    apiSocketInJail: '/api.sock',
  });
  assert.deepEqual(argv, [
    '--id',
    'sb1',
    '--exec-file',
    '/usr/local/bin/firecracker',
    '--uid',
    '300001',
    '--gid',
    '300000',
    '--chroot-base-dir',
    '/run/kiln/firecracker/jail',
    '--cgroup-version',
    '2',
    '--parent-cgroup',
    'kiln-firecracker',
    '--cgroup',
    'cpu.max=225000 100000',
    '--cgroup',
    `memory.max=${vmmMemoryLimitBytes(512)}`,
    '--cgroup',
    'memory.swap.max=0',
    '--netns',
    '/var/run/netns/kiln-fc-sb1',
    '--',
    '--api-sock',
    '/api.sock',
  ]);
  assert.equal(jailRoot(settings, '/usr/local/bin/firecracker', 'sb1'), '/run/kiln/firecracker/jail/firecracker/sb1/root');
});

test('cgroup v1 uses cfs quota/period and memory.limit_in_bytes; memory leaves VMM headroom', () => {
  assert.deepEqual(cgroupLimits(1, { vcpus: 1, memoryMib: 256 }), ['cpu.cfs_period_us=100000', 'cpu.cfs_quota_us=125000', `memory.limit_in_bytes=${(256 + 32 + 6) * 1048576}`]);
  assert.ok(vmmMemoryLimitBytes(1024) > 1024 * 1048576);
});

test('each jailed VM gets its own uid; uids are reused after release; exhaustion is an error', () => {
  const pool = new UidPool(300_000, 2, 'jailer');
  const a = pool.take();
  const b = pool.take();
  assert.notEqual(a, b);
  assert.throws(() => pool.take(), /all 2 jailer uids/);
  pool.release(a);
  assert.equal(pool.take(), a);
});
