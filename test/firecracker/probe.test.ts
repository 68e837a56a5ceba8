/** probe() / kiln doctor: exact reasons on this host, and the decision logic on synthetic hosts. */
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createFirecrackerBackend } from '../../src/backends/firecracker/backend.js';
import { hostChecks, inspectHost } from '../../src/backends/firecracker/probe.js';

test('kiln doctor on this host explains exactly what is missing', async () => {
  const facts = await inspectHost();
  const probe = await createFirecrackerBackend({
    runDir: '/nonexistent',
    vmImage: async () => {
      throw new Error('unused');
    },
  }).probe();
  const checks = probe.checks;
  const byName = Object.fromEntries(checks.map((c) => [c.name, c]));
  const bin = byName['firecracker binary']!;
  const cpu = byName['CPU virtualisation']!;
  assert.equal(bin.ok, !!facts.firecrackerPath);
  if (!facts.firecrackerPath) assert.match(bin.detail, /no firecracker binary on PATH .*kiln firecracker install/);
  assert.equal(cpu.ok, !!facts.cpuVirtualisation);
  if (!facts.cpuVirtualisation) assert.match(cpu.detail, /no vmx\/svm flag in \/proc\/cpuinfo/);
  if (facts.kvmPvm) assert.match(cpu.detail, /kvm-pvm host .*ordinary guest kernels hang/);

  assert.equal(probe.available, !!facts.firecrackerPath && facts.kvmWritable && !!facts.cpuVirtualisation);
  if (!probe.available) {
    for (const c of checks.filter((x) => !x.ok)) assert.ok(probe.reason!.includes(c.detail), `reason mentions: ${c.name}`);
  }
  assert.equal(probe.capabilities.snapshots, true);
  assert.equal(probe.capabilities.separateKernel, true);
});

test('a host with a firecracker binary, writable /dev/kvm and vmx is available; each missing piece is named', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-probe-'));
  try {
    await mkdir(join(dir, 'bin'));
    await writeFile(join(dir, 'bin/firecracker'), '#!/bin/sh\necho "Firecracker v1.10.1"\n');
    await chmod(join(dir, 'bin/firecracker'), 0o755);
    await writeFile(join(dir, 'kvm'), '');
    await writeFile(join(dir, 'cpuinfo-vmx'), 'processor\t: 0\nflags\t\t: fpu vme vmx sse2\n');
    await writeFile(join(dir, 'cpuinfo-none'), 'processor\t: 0\nflags\t\t: fpu vme sse2 hypervisor\n');
    await mkdir(join(dir, 'sys/kvm_pvm'), { recursive: true });
    const good = await inspectHost({ paths: { kvm: join(dir, 'kvm'), cpuinfo: join(dir, 'cpuinfo-vmx'), envPath: join(dir, 'bin'), sysModule: join(dir, 'none') } });
    assert.equal(good.firecrackerVersion, 'Firecracker v1.10.1');
    assert.deepEqual(
      hostChecks(good).filter((c) => !c.ok),
      [],
    );

    const pvm = await inspectHost({ paths: { kvm: join(dir, 'kvm'), cpuinfo: join(dir, 'cpuinfo-none'), envPath: join(dir, 'bin'), sysModule: join(dir, 'sys') } });
    const failed = hostChecks(pvm).filter((c) => !c.ok);
    assert.deepEqual(
      failed.map((c) => c.name),
      ['CPU virtualisation'],
    );
    assert.match(failed[0]!.detail, /kvm-pvm host/);
    assert.deepEqual(
      hostChecks(pvm, 'force').filter((c) => !c.ok),
      [],
      'explicit override',
    );

    const nothing = await inspectHost({ paths: { kvm: join(dir, 'nokvm'), cpuinfo: join(dir, 'cpuinfo-vmx'), envPath: join(dir, 'empty') } });
    assert.deepEqual(
      hostChecks(nothing)
        .filter((c) => !c.ok)
        .map((c) => c.name),
      ['firecracker binary', 'KVM device'],
    );
    assert.match(hostChecks(nothing)[1]!.detail, /\/dev\/kvm does not exist: load kvm_intel or kvm_amd/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
