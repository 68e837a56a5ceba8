/**
 * kiln doctor's cgroup check (the namespace backend's thorough probe): the mode, and a real attempt at a delegated sandbox cgroup with
 * limits (created and removed, nothing left), not a look at what is mounted.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { doctorReport } from '../../src/cli/commands/doctor.js';
import { cgroupMode } from '../../src/core/cgroups.js';

/** This process's cgroup directories, one per v1 hierarchy kiln uses or the v2 one. */
function ownDirs(): string[] {
  const lines = readFileSync('/proc/self/cgroup', 'utf8')
    .trim()
    .split('\n')
    .map((l) => l.split(':'));
  if (cgroupMode() === 'v2') return [join('/sys/fs/cgroup', lines.find((l) => l[0] === '0')![2]!)];
  // cpuset where it is mounted: sandbox cgroups use it for the CPUs they see (core/cpu-sets.ts).
  const controllers = ['memory', 'pids', 'cpu', ...(existsSync('/sys/fs/cgroup/cpuset/cgroup.procs') ? ['cpuset'] : [])];
  return controllers.map((c) => join('/sys/fs/cgroup', c, lines.find((l) => l[1]!.split(',').includes(c))![2]!));
}

describe('kiln doctor: cgroups', { skip: process.getuid?.() === 0 ? undefined : 'needs root' }, () => {
  it('reports the mode and that a delegated sandbox cgroup can be made here, and leaves nothing behind', async () => {
    const [namespace] = (await doctorReport(['namespace'])).backends;
    const check = namespace!.checks.find((c) => c.name === 'cgroups');
    assert.ok(check, 'a cgroups check');
    assert.equal(check.ok, true, check.detail);
    assert.match(check.detail, new RegExp(`^${cgroupMode()}: sandbox cgroups with memory, pids and cpu limits can be created and delegated`));
    for (const dir of ownDirs()) assert.equal(existsSync(join(dir, `kiln-probe-${process.pid}`)), false, `probe cgroup left in ${dir}`);
  });
});
