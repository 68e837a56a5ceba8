/** bwrap's arguments for the cgroup parts (#12.1, #12.8): where the delegated cgroup goes, and the cgroup namespace. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type BwrapOptions, bwrapArgs } from '../../src/backends/namespace/bwrap.js';

const base: BwrapOptions = {
  bwrapPath: 'bwrap',
  hostUid: 200_000,
  lowerDir: '/lower',
  agentPath: '/agent',
  diskBytes: 1 << 20,
  hostname: 'sandbox',
  onStderr: () => undefined,
};

describe('bwrap arguments', () => {
  it('binds each delegated cgroup directory under /.kiln/cgroup, before the agent runs', () => {
    const args = bwrapArgs({ ...base, cgroupDirs: { memory: '/sys/fs/cgroup/memory/k/sb/user', pids: '/sys/fs/cgroup/pids/k/sb/user' } });
    const at = (dest: string) => args.findIndex((a, i) => a === '--bind' && args[i + 2] === dest);
    assert.equal(args[at('/.kiln/cgroup/memory') + 1], '/sys/fs/cgroup/memory/k/sb/user');
    assert.equal(args[at('/.kiln/cgroup/pids') + 1], '/sys/fs/cgroup/pids/k/sb/user');
    assert.ok(at('/.kiln/cgroup/pids') < args.indexOf('--'));
  });

  it('makes a cgroup namespace unless told not to (cgroup v2 with nsdelegate), and every other namespace always', () => {
    const withNs = bwrapArgs(base);
    const withoutNs = bwrapArgs({ ...base, cgroupNamespace: false });
    assert.ok(withNs.includes('--unshare-cgroup-try'));
    assert.ok(!withoutNs.some((a) => a.startsWith('--unshare-cgroup') || a === '--unshare-all'), withoutNs.join(' '));
    for (const ns of ['--unshare-user', '--unshare-ipc', '--unshare-pid', '--unshare-net', '--unshare-uts']) {
      assert.ok(withoutNs.includes(ns) && withNs.includes(ns), ns);
    }
  });

  it('a workspace: the project bind read-only, the upper image read-write, and the agent told where they are', () => {
    const args = bwrapArgs({ ...base, workspace: { lowerDir: '/d/ws/1/lower', mntDir: '/d/ws/1/mnt', gitWritable: false } });
    const bind = (kind: string, dest: string) => args[args.findIndex((a, i) => a === kind && args[i + 2] === dest) + 1];
    assert.equal(bind('--ro-bind', '/.kiln/ws-lower'), '/d/ws/1/lower');
    assert.equal(bind('--bind', '/.kiln/ws'), '/d/ws/1/mnt');
    const agent = args.slice(args.indexOf('--'));
    assert.deepEqual(agent.slice(agent.indexOf('--workspace-lower'), agent.indexOf('--workspace-lower') + 4), ['--workspace-lower', '/.kiln/ws-lower', '--workspace-mnt', '/.kiln/ws']);
    assert.ok(!agent.includes('--workspace-git-writable'));
    assert.ok(bwrapArgs({ ...base, workspace: { lowerDir: '/l', mntDir: '/m', gitWritable: true } }).includes('--workspace-git-writable'));
    assert.ok(!bwrapArgs(base).some((a) => a.startsWith('--workspace') || a.startsWith('/.kiln/ws')));
  });

  it('tells the agent its CPUs in the kernel list format, and nothing without a list', () => {
    const args = bwrapArgs({ ...base, cpuList: [0, 1, 2, 5] });
    assert.deepEqual(args.slice(args.indexOf('--cpus'), args.indexOf('--cpus') + 2), ['--cpus', '0-2,5']);
    assert.ok(args.indexOf('--cpus') > args.indexOf('--'), "an agent flag, after bwrap's own");
    assert.ok(!bwrapArgs(base).includes('--cpus'));
  });
});
