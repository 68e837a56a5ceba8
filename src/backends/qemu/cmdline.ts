/**
 * The QEMU command line. Template and clone must use identical lines except for `share=` and
 * `-incoming defer` (migration compares devices, memory size, CPU count), so both come from here.
 */
import { INITIAL_GUEST_MAC } from '../../core/host-taps.js';
import { TCG_BUFFER_MIB } from './jail.js';

export interface VmPaths {
  /** Per-VM directory under runDir; removed with the VM. */
  dir: string;
  ctlSock: string;
  qmpSock: string;
  /**
   * The serial console (QEMU listens; process.ts reads it): a socket, not QEMU's stdout, so the
   * console is still there for the next service process when the VM outlives this one.
   */
  conSock: string;
  pidFile: string;
  /**
   * Where a pause's outgoing migration socket is made (machine-state.ts): QEMU connects to it as
   * `unix:` (its seccomp filter forbids `exec:`); a jailed QEMU sees it at JAIL_MIG_DIR.
   */
  migDir: string;
}

export interface QemuArgsOptions {
  id: string;
  accel: 'kvm' | 'tcg';
  cpus: number;
  memoryMib: number;
  kernelPath: string;
  initrdPath: string;
  cmdline: string;
  diskImage: string;
  /**
   * A workspace's drives (no template has them, so never on a clone): the project's squashfs
   * snapshot read-only and the upper ext4 image read-write, found by the guest through their
   * serials (agent/workspace_vm_linux.go).
   */
  workspace?: { lowerImage: string; upperImage: string };
  paths: VmPaths;
  /** Guest RAM backed by a file (templates: share=on; clones: share=off). */
  memFile?: { path: string; share: boolean };
  /**
   * Guest RAM as an anonymous memory backend named like a file-backed one (`mem`): a restore of a
   * paused clone, whose migration stream names that RAM block.
   */
  ramBackend?: boolean;
  /**
   * One virtio-net NIC on the TAP QEMU inherits open at TAP_FD (core/host-taps.ts). Every VM of a template
   * has it or none does (migration compares devices); the MAC is the same for all (INITIAL_GUEST_MAC): the
   * guest gets its own with `net.config`.
   */
  nic?: boolean;
  /** Start paused, waiting for `migrate-incoming` (clones). */
  incoming?: boolean;
  /**
   * Sandboxes run untrusted code: confine QEMU with seccomp (no new processes, no privilege
   * changes) and, when given, drop to this user (`uid:gid` or a name) and chroot into this
   * directory once its files and devices are open (jail.ts).
   */
  confine?: { runAs?: string; chroot?: string };
}

/** The descriptor a VM's TAP is open at in QEMU (after stdio, the migration stream and bwrap's two pipes). */
export const TAP_FD = 6;

export function vmPaths(dir: string): VmPaths {
  return { dir, ctlSock: `${dir}/ctl.sock`, qmpSock: `${dir}/qmp.sock`, conSock: `${dir}/con.sock`, pidFile: `${dir}/qemu.pid`, migDir: `${dir}/mig` };
}

/** The `-name` marker scan() uses to recognise this service's QEMU processes. */
export function processName(id: string): string {
  return `kiln-${id}`;
}

/** vCPUs for a limit of `cpus`: a fraction rounds up (the VMM's cgroup quota keeps the fraction, jail.ts). */
export function vcpuCount(cpus: number): number {
  return Math.max(1, Math.ceil(cpus - 1e-9));
}

export function qemuArgs(o: QemuArgsOptions): string[] {
  const mem = `${o.memoryMib}M`;
  // TCG's translated-code buffer is capped (QEMU's default is up to 1 GiB) so that guest RAM plus
  // a fixed overhead bounds a VMM's memory (its cgroup, jail.ts).
  const accel = o.accel === 'tcg' ? `tcg,tb-size=${TCG_BUFFER_MIB}` : o.accel;
  const args = ['-name', `${processName(o.id)},process=${processName(o.id)}`, '-accel', accel];
  if (o.memFile) {
    args.push('-object', `memory-backend-file,id=mem,size=${mem},mem-path=${safePath(o.memFile.path)},share=${o.memFile.share ? 'on' : 'off'}`);
    args.push('-M', 'microvm,memory-backend=mem');
  } else if (o.ramBackend) {
    args.push('-object', `memory-backend-ram,id=mem,size=${mem}`);
    args.push('-M', 'microvm,memory-backend=mem');
  } else {
    args.push('-M', 'microvm');
  }
  if (o.accel === 'kvm') args.push('-cpu', 'host');
  // qemu64 lacks ARAT ("APIC timer always running"), so the guest keeps the LAPIC timer out of
  // one-shot mode (there is no HPET on microvm to broadcast from): no high-resolution timers, no
  // NO_HZ idle, 250 ticks a second even when idle. With it an idle clone sleeps.
  else args.push('-cpu', 'qemu64,+arat');
  args.push(
    '-m',
    mem,
    '-smp',
    String(vcpuCount(o.cpus)),
    '-nodefaults',
    '-no-user-config',
    '-nographic',
    '-no-reboot',
    '-kernel',
    safePath(o.kernelPath),
    '-initrd',
    safePath(o.initrdPath),
    '-append',
    o.cmdline,
    '-chardev',
    `socket,id=con,path=${safePath(o.paths.conSock)},server=on,wait=off`,
    '-serial',
    'chardev:con',
    '-drive',
    `if=none,id=rootfs,file=${safePath(o.diskImage)},format=raw,readonly=on`,
    '-device',
    'virtio-blk-device,drive=rootfs',
    ...(o.workspace
      ? [
          '-drive',
          `if=none,id=wslower,file=${safePath(o.workspace.lowerImage)},format=raw,readonly=on`,
          '-device',
          'virtio-blk-device,drive=wslower,serial=kiln-ws-lower',
          '-drive',
          `if=none,id=wsupper,file=${safePath(o.workspace.upperImage)},format=raw`,
          '-device',
          'virtio-blk-device,drive=wsupper,serial=kiln-ws-upper',
        ]
      : []),
    ...(o.nic ? ['-netdev', `tap,id=net0,fd=${TAP_FD}`, '-device', `virtio-net-device,netdev=net0,mac=${INITIAL_GUEST_MAC}`] : []),
    // No virtio-rng: every VM gets 64 bytes of host entropy with the handshake, before any user
    // code (the hello sync), and the device's kernel thread refills about once a second in a
    // young guest, waking it (and, under TCG, costing every template clone fresh translation).
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=ctl,path=${safePath(o.paths.ctlSock)},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=ctl,name=ctl',
    '-qmp',
    `unix:${safePath(o.paths.qmpSock)},server=on,wait=off`,
    '-pidfile',
    safePath(o.paths.pidFile),
  );
  if (o.incoming) args.push('-incoming', 'defer');
  if (o.confine) {
    // QEMU installs the filter before it drops to -runas, so set*id must stay allowed for that
    // drop; afterwards the unprivileged user cannot regain anything with them.
    const elevate = o.confine.runAs ? 'allow' : 'deny';
    args.push('-sandbox', `on,obsolete=deny,elevateprivileges=${elevate},spawn=deny,resourcecontrol=deny`);
    if (o.confine.chroot) args.push('-chroot', safePath(o.confine.chroot));
    if (o.confine.runAs) args.push('-runas', o.confine.runAs);
  }
  return args;
}

/** QEMU option values split on ',' and the migration URI goes through a shell: refuse both. */
export function safePath(p: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(p)) throw new Error(`path ${JSON.stringify(p)} has characters QEMU options cannot carry; use a plain path`);
  return p;
}
