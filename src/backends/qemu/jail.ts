/**
 * What confines a sandbox QEMU besides its own seccomp filter, as Firecracker's jailer does:
 * - its own host uid/gid, from a range, free again only once nothing of the VM is left;
 * - its own cgroup (memory = guest RAM + VMM overhead, pids, CPU), entered before QEMU starts;
 * - its own mount, pid, network, IPC and UTS namespaces (bubblewrap, run as root without a user
 *   namespace): a read-only tmpfs root holding /usr (to exec QEMU), /dev/null, /dev/kvm under
 *   KVM, and only this VM's files at their host paths. QEMU opens them as root, then chroots into
 *   an empty directory and drops to the VM's uid (`-chroot`, `-runas`) before any guest code runs.
 */

import { VmmIdentities, type VmmIdentity } from '../../core/vmm-identities.js';
import { hostRootArgs } from '../../core/vmm-jail.js';
import type { QemuLog } from './log.js';

export interface JailOptions {
  /** First host uid of the range QEMU processes run as (default 400000); gid = uid. */
  uidBase?: number;
  /** Size of the range (default 65536): the most VMs alive at once. */
  uidCount?: number;
  /** Parent cgroup of this instance's VMMs, below the service's own (one per run dir). */
  cgroupName: string;
  bwrapPath?: string;
}

export interface JailLimits {
  /** Guest RAM as QEMU's `-m`. */
  guestMib: number;
  cpus: number;
  accel: 'kvm' | 'tcg';
  /**
   * A clone whose RAM is a private mapping of its template's RAM file. Guest pages the template
   * never touched are holes in that tmpfs file: a first read fills the hole with a shared page
   * charged to the clone's cgroup, and the first write then copies it into private memory, so
   * such a VMM may hold up to twice its guest RAM (seen: a 256 MiB clone that filled its RAM held
   * 374 MiB anonymous + 194 MiB shmem and was OOM-killed by a limit of guest + overhead).
   */
  templateBacked?: boolean;
}

/** Where QEMU chroots once its files are open: an empty, read-only directory. */
export const EMPTY_ROOT = '/empty';

/** The VM's migration folder (VmPaths.migDir) as the chrooted QEMU sees it: the only thing in its root. */
export const JAIL_MIG_DIR = '/mig';

/**
 * What QEMU itself uses beyond guest RAM: its code, heap, device and block buffers, and under TCG
 * the translated-code buffer, which is capped (`tb-size`, cmdline.ts) so this bound holds.
 * Measured under TCG: a cold-booted 320 MiB guest that filled its RAM (guest OOM kill) peaked at
 * 450 MiB in its cgroup, guest RAM + ~130 MiB, with the translation buffer not yet full.
 */
export function vmmOverheadMib(accel: 'kvm' | 'tcg'): number {
  return accel === 'tcg' ? 96 + TCG_BUFFER_MIB : 96;
}

/** The translation buffer of one TCG QEMU (QEMU's default is up to 1 GiB, an eighth of host RAM). */
export const TCG_BUFFER_MIB = 128;

/**
 * QEMU's threads: main loop, RCU, one per vCPU, and the block layer's worker pool (up to 64);
 * spawning is denied by its seccomp filter, so threads are all that counts.
 */
function pidsMax(cpus: number): number {
  return 96 + Math.ceil(cpus);
}

/** One VM's confinement, held until the VM is gone: its uid and cgroup (core/vmm-identities.ts) and bwrap's arguments. */
export interface VmJail extends VmmIdentity {
  /** bwrap's arguments before `--`: namespaces and the VM's root. */
  bwrapArgs: string[];
  bwrapPath: string;
}

export interface JailFiles {
  /** Host paths bound read-only at the same path (kernel, initramfs, pack image). */
  readOnly: string[];
  /** Host paths bound read-write (the VM's directory; a clone's template RAM file). */
  readWrite: string[];
  /** The VM's migration folder, bound at JAIL_MIG_DIR inside the chroot. */
  migDir?: string;
}

export class VmmJails {
  private readonly identities: VmmIdentities;
  private hostRoot: Promise<string[]> | undefined;

  constructor(
    private readonly o: JailOptions,
    log?: QemuLog,
  ) {
    this.identities = new VmmIdentities({
      uidBase: o.uidBase ?? 400_000,
      uidCount: o.uidCount ?? 65_536,
      cgroupName: o.cgroupName,
      what: 'QEMU',
      onStuck: (cgroup, uid, e) => log?.('warn', 'a QEMU cgroup did not empty; its uid stays out of use', { cgroup, uid, error: e.message }),
    });
  }

  get bwrapPath(): string {
    return this.o.bwrapPath ?? 'bwrap';
  }

  /** Confinement for a VM about to start; `name` (its QEMU id) names its cgroup. */
  async acquire(name: string, limits: JailLimits, files: JailFiles, binary: string): Promise<VmJail> {
    const args = bwrapArgs(await this.rootArgs(binary), files, limits.accel === 'kvm');
    const identity = await this.identities.acquire(name, {
      memoryBytes: ((limits.templateBacked ? 2 : 1) * limits.guestMib + vmmOverheadMib(limits.accel)) * 2 ** 20,
      pidsMax: pidsMax(limits.cpus),
      // The vCPU threads plus a quarter core for the main loop (devices, QMP, the console).
      cpus: limits.cpus + 0.25,
    });
    return Object.assign(identity, { bwrapArgs: args, bwrapPath: this.bwrapPath });
  }

  /** The confinement of a VM an earlier run of the service left running (its uid, cgroup and jail's pids). */
  async adopt(name: string, uid: number, pids: number[]): Promise<VmJail> {
    const identity = await this.identities.adopt(name, uid, pids);
    return Object.assign(identity, { bwrapArgs: [], bwrapPath: this.bwrapPath });
  }

  /** Why QEMUs cannot be jailed on this host, or undefined. */
  problem(): string | undefined {
    return this.identities.problem();
  }

  /** Pids of every jailed process this instance started and has not released. */
  pids(): number[] {
    return this.identities.pids();
  }

  /** Start-up scan: cgroups under this instance's parent that no live VM holds (a crashed service's). */
  scan(): Promise<string[]> {
    return this.identities.scan();
  }

  /** Removes the parent cgroups once no VM is left in them. */
  close(): Promise<void> {
    return this.identities.close();
  }

  get cgroupName(): string {
    return this.identities.cgroupName;
  }

  /** /usr and the host's top-level links into it, so QEMU and its libraries can be exec'd. */
  private rootArgs(binary: string): Promise<string[]> {
    this.hostRoot ??= hostRootArgs(binary);
    this.hostRoot.catch(() => {
      this.hostRoot = undefined;
    });
    return this.hostRoot;
  }
}

/**
 * Namespaces (no user namespace: bwrap runs as root so QEMU can open its files and /dev/kvm, then
 * drop) and a read-only root with only the given files. bwrap's own init is PID 1 of the pid
 * namespace, QEMU its only child: when bwrap dies, the namespace and QEMU die with it. No
 * --die-with-parent: a VM outlives the service (a restart reattaches it, backend.ts); what a
 * crashed service leaves unrecorded the start-up scan kills.
 */
export function bwrapArgs(root: string[], files: JailFiles, kvm: boolean): string[] {
  const args = [
    '--unshare-pid',
    '--unshare-net',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    '--new-session',
    '--clearenv',
    ...root,
    // QEMU probes file locking on /dev/null at start-up.
    '--dev-bind',
    '/dev/null',
    '/dev/null',
  ];
  if (kvm) args.push('--dev-bind', '/dev/kvm', '/dev/kvm');
  for (const p of files.readOnly) args.push('--ro-bind', p, p);
  for (const p of files.readWrite) args.push('--bind', p, p);
  args.push('--dir', EMPTY_ROOT);
  if (files.migDir) args.push('--bind', files.migDir, `${EMPTY_ROOT}${JAIL_MIG_DIR}`);
  args.push('--remount-ro', '/', '--chdir', '/');
  return args;
}
