/** Fast checks of the pieces the QEMU backend is built from (no VM is started). */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { qemuArgs, safePath, vmPaths } from '../../src/backends/qemu/cmdline.js';
import { listKept, saveKept } from '../../src/backends/qemu/kept.js';
import { ConsoleRing } from '../../src/core/console-ring.js';
import { guestCmdline } from '../../src/vmimage/cmdline.js';
import { buildCpio } from '../../src/vmimage/cpio.js';
import { findHostKernel } from '../../src/vmimage/kernel.js';
import { moduleName, modulesOrder, resolveModules, stripSignature, VIRTIO_DEVICE } from '../../src/vmimage/modules.js';

const execFileAsync = promisify(execFile);
const kernel = await findHostKernel().catch(() => undefined);

describe('vmimage', () => {
  it('writes a newc cpio that cpio(1) lists', async (t) => {
    const which = await execFileAsync('sh', ['-c', 'command -v cpio']).catch(() => undefined);
    if (!which) return t.skip('cpio is not installed');
    const dir = await mkdtemp(join(tmpdir(), 'kiln-cpio-'));
    try {
      const archive = buildCpio([
        { kind: 'dir', path: 'dev' },
        { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
        { kind: 'file', path: 'init', mode: 0o755, data: Buffer.from('#!/bin/sh\n') },
        { kind: 'symlink', path: 'sh', target: 'init' },
      ]);
      assert.equal(archive.length % 512, 0);
      await writeFile(join(dir, 'a.cpio'), archive);
      const { stdout } = await execFileAsync('sh', ['-c', `cpio -itv < ${join(dir, 'a.cpio')}`]);
      assert.match(stdout, /^drwxr-xr-x .* dev$/m);
      assert.match(stdout, /^crw------- .* 5,\s+1 .* dev\/console$/m);
      assert.match(stdout, /^-rwxr-xr-x .* 10 .* init$/m);
      assert.match(stdout, /^lrwxrwxrwx .* sh -> init$/m);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('strips an appended module signature and leaves unsigned modules alone', () => {
    const body = Buffer.from('\x7fELF module body');
    const sig = Buffer.alloc(300, 7);
    const info = Buffer.alloc(12);
    info.writeUInt32BE(sig.length, 8);
    const signed = Buffer.concat([body, sig, info, Buffer.from('~Module signature appended~\n')]);
    assert.deepEqual(stripSignature(signed), body);
    assert.deepEqual(stripSignature(body), body);
  });

  it('resolves guest modules with dependencies first', { skip: kernel ? false : 'no host kernel' }, async () => {
    const mods = (await resolveModules(kernel!.modulesDir)).map((m) => m.name);
    const at = (n: string): number => mods.indexOf(n);
    for (const n of ['virtio_mmio', 'virtio_blk', 'virtio_console', 'squashfs', 'overlay']) assert.ok(at(n) >= 0, `${n} missing from ${mods}`);
    if (at('virtio') >= 0) assert.ok(at('virtio_ring') < at('virtio') && at('virtio') < at('virtio_mmio'));
    if (at('vmw_vsock_virtio_transport') >= 0) assert.ok(at('vsock') < at('vmw_vsock_virtio_transport_common'));
    assert.equal(new Set(mods).size, mods.length);
    const first = (await resolveModules(kernel!.modulesDir))[0]!;
    const raw = await readFile(first.sourcePath).catch(() => undefined);
    if (raw && first.sourcePath.endsWith('.ko')) assert.ok(stripSignature(raw).length <= raw.length);
    assert.equal(moduleName('kernel/drivers/char/hw_random/virtio-rng.ko.xz'), 'virtio_rng');
  });

  it('marks device drivers with the virtio device they need, never a module others depend on', { skip: kernel ? false : 'no host kernel' }, async () => {
    const mods = await resolveModules(kernel!.modulesDir);
    const device = new Map(mods.map((m) => [m.name, m.virtioDevice]));
    assert.equal(device.get('virtio_blk'), VIRTIO_DEVICE.block);
    assert.equal(device.get('virtio_console'), VIRTIO_DEVICE.console);
    for (const n of ['virtio_ring', 'virtio', 'virtio_mmio', 'squashfs', 'overlay']) if (device.has(n)) assert.equal(device.get(n), undefined, n);
    for (const n of ['vsock', 'vmw_vsock_virtio_transport_common', 'vmw_vsock_virtio_transport']) if (device.has(n)) assert.equal(device.get(n), VIRTIO_DEVICE.vsock, n);
    // A wanted module that an unconditional one depends on loads unconditionally.
    const dir = await mkdtemp(join(tmpdir(), 'kiln-mods-'));
    try {
      await writeFile(join(dir, 'modules.dep'), 'kernel/a.ko:\nkernel/b.ko: kernel/a.ko\nkernel/c.ko: kernel/a.ko\n');
      const fake = await resolveModules(dir, [
        { name: 'a', required: true, virtioDevice: 19 },
        { name: 'b', required: true },
        { name: 'c', required: true, virtioDevice: 19 },
      ]);
      assert.deepEqual(
        fake.map((m) => [m.name, m.virtioDevice]),
        [
          ['a', undefined],
          ['b', undefined],
          ['c', 19],
        ],
      );
      assert.equal(modulesOrder(fake), 'a.ko\nb.ko\nc.ko 19\n');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('puts the agent into --init mode and passes the disk size and TSC rate', () => {
    const line = guestCmdline({ diskMib: 128, tscKhz: 2_596_136, execUid: 1000, extra: 'kiln.panic=1' });
    assert.match(line, /tsc_early_khz=2596136 tsc=reliable/);
    assert.match(line, /kiln\.disk_mib=128/);
    assert.match(line, / psi=0 /);
    assert.match(line, / nowatchdog /);
    assert.match(line, / no_timer_check /);
    assert.match(line, / GODEBUG=asyncpreemptoff=1 /);
    assert.ok(line.endsWith('kiln.panic=1 -- --init'));
  });
});

describe('qemu pieces', () => {
  /** One VM's command-line inputs; each test varies what it is about. */
  const base = {
    id: 'x',
    accel: 'tcg' as const,
    cpus: 1,
    memoryMib: 256,
    kernelPath: '/k',
    initrdPath: '/i',
    cmdline: 'console=ttyS0',
    diskImage: '/d.sqfs',
    paths: vmPaths('/run/kiln/qemu/vms/x'),
  };

  it('reports a failure from its first line, however long the call trace after it', () => {
    const ring = new ConsoleRing(200);
    ring.push('[ 0.1] booting\nkiln-init: kiln.panic=1 on the kernel command line\nKernel panic - not syncing: Attempted to kill init!\n');
    for (let i = 0; i < 60; i++) ring.push(`[ 0.8] ? frame_${i}+0x7e/0x780\n`);
    ring.push('---[ end Kernel panic - not syncing ]---\n');
    const lines = ring.failure(80);
    assert.match(lines[0]!, /^kiln-init: kiln\.panic=1/);
    assert.equal(lines.at(-1), '---[ end Kernel panic - not syncing ]---');
    assert.equal(ring.failure(10).length, 10);
    const plain = new ConsoleRing(200);
    plain.push(`${Array.from({ length: 50 }, (_, i) => `line ${i}`).join('\n')}\n`);
    assert.deepEqual(plain.failure(80, 3), ['line 47', 'line 48', 'line 49']);
  });

  it('keeps the last lines of the console, including a partial one', () => {
    const ring = new ConsoleRing(3);
    ring.push('one\ntwo\r\nthr');
    ring.push('ee\nfour\nfi\x1b[0m');
    assert.deepEqual(ring.tail(), ['three', 'four', 'fi[0m']);
  });

  it('puts the serial console on a socket in the VM folder, not on stdio (a kept VM outlives the service)', () => {
    const args = qemuArgs(base);
    assert.deepEqual(args.slice(args.indexOf('-serial') - 2, args.indexOf('-serial') + 2), [
      '-chardev',
      'socket,id=con,path=/run/kiln/qemu/vms/x/con.sock,server=on,wait=off',
      '-serial',
      'chardev:con',
    ]);
    assert.ok(!args.includes('stdio'));
  });

  it('lists VM records: a folder without one is skipped, an unreadable or foreign one is named', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-kept-'));
    try {
      const rec = { id: 'a', pid: 1, start: '5', wrapperPids: [], pack: { name: 'p', hash: 'h', imagePath: '/i' }, details: {} };
      for (const id of ['a', 'b', 'c', 'd']) await mkdir(join(dir, id));
      await saveKept(join(dir, 'a'), rec);
      await writeFile(join(dir, 'b', 'kept.json'), '{');
      await saveKept(join(dir, 'c'), { ...rec, id: 'a' });
      const { records, unreadable } = await listKept(dir);
      assert.deepEqual(records, [rec]);
      assert.deepEqual(
        unreadable.map((u) => u.id),
        ['b', 'c'],
      );
      assert.deepEqual(await listKept(join(dir, 'missing')), { records: [], unreadable: [] });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('builds identical template and clone command lines except share= and -incoming', () => {
    const tpl = qemuArgs({ ...base, memFile: { path: '/dev/shm/t.mem', share: true } });
    const clone = qemuArgs({ ...base, memFile: { path: '/dev/shm/t.mem', share: false }, incoming: true });
    const diff = clone.filter((a, i) => a !== tpl[i]);
    assert.deepEqual(diff, ['memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t.mem,share=off', '-incoming', 'defer']);
    assert.ok(tpl.includes('-no-reboot'));
  });

  it('a workspace adds its two drives after the root disk, the snapshot read-only, each with the serial the guest looks for', () => {
    const args = qemuArgs({ ...base, workspace: { lowerImage: '/d/ws/1/lower.sqfs', upperImage: '/d/ws/1/upper.img' } });
    const extra = args.filter((a) => !qemuArgs(base).includes(a));
    assert.deepEqual(extra, [
      'if=none,id=wslower,file=/d/ws/1/lower.sqfs,format=raw,readonly=on',
      'virtio-blk-device,drive=wslower,serial=kiln-ws-lower',
      'if=none,id=wsupper,file=/d/ws/1/upper.img,format=raw',
      'virtio-blk-device,drive=wsupper,serial=kiln-ws-upper',
    ]);
    assert.ok(
      args.indexOf('virtio-blk-device,drive=rootfs') >= 0 && args.indexOf('virtio-blk-device,drive=rootfs') < args.indexOf('virtio-blk-device,drive=wslower,serial=kiln-ws-lower'),
      'the pack stays /dev/vda',
    );
  });

  it('gives the guest as many vCPUs as the limit, a fraction rounded up', () => {
    const smp = (cpus: number) => {
      const args = qemuArgs({ ...base, accel: 'kvm', cpus });
      return args[args.indexOf('-smp') + 1];
    };
    assert.deepEqual([0.25, 1, 1.5, 2, 4].map(smp), ['1', '1', '2', '2', '4']);
  });

  it('refuses paths QEMU options cannot carry', () => {
    assert.throws(() => safePath('/tmp/a,b'));
    assert.throws(() => safePath("/tmp/a'b"));
    assert.equal(safePath('/run/kiln/qemu/vms/a_b-1/ctl.sock'), '/run/kiln/qemu/vms/a_b-1/ctl.sock');
  });
});
