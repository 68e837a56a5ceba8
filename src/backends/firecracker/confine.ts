/**
 * Firecracker without its jailer, confined as the jailer (and kiln's QEMU jail) would: its own
 * host uid/gid from a range, its own cgroup (memory = guest RAM + VMM overhead, pids, CPU), its own
 * mount, pid, IPC, UTS and (without a NIC) network namespaces whose read-only root holds only /usr,
 * /dev/null, the KVM devices and the VM's own files. bwrap (root) builds the namespaces and waits
 * until its child is in the cgroup; `setpriv` drops to the VM's uid before Firecracker runs, so
 * Firecracker opens everything (its files, /dev/kvm) as that uid.
 */
import { stat } from 'node:fs/promises';
import { VmmIdentities, type VmmIdentity } from '../../core/vmm-identities.js';
import { hostRootArgs } from '../../core/vmm-jail.js';
import { vmmMemoryLimitBytes } from './jailer.js';

export interface UnjailedConfinementOptions {
  /** First uid of the range (default 500000); gid = uid. */
  uidBase?: number;
  uidCount?: number;
  /** Parent cgroup of this instance's VMMs (one per run dir). */
  cgroupName: string;
  bwrapPath?: string;
}

/** What the launcher needs to start Firecracker confined (process.ts): its uid and cgroup (core/vmm-identities.ts) and bwrap's arguments. */
export interface VmmConfinement extends VmmIdentity {
  bwrapPath: string;
  /** bwrap's arguments before `--info-fd`: namespaces, the root, the working directory. */
  bwrapArgs: string[];
  /** The drop to the VM's uid, run inside the namespaces before Firecracker. */
  setprivArgs: string[];
}

export interface ConfinementFiles {
  /** The VM's directory: Firecracker's cwd, bound read-write. */
  dir: string;
  /** Host files its directory links to (kernel, initramfs, rootfs, snapshot), bound read-only. */
  readOnly: string[];
  /**
   * A NIC: Firecracker gets /dev/net/tun and stays in the network namespace it is started in (the
   * VM's own that kiln made, netns.ts; the host's for a TAP of the sandbox's backendOptions).
   */
  network: boolean;
}

const KVM_DEVICES = ['/dev/kvm', '/dev/userfaultfd'];

export class UnjailedConfiner {
  private readonly identities: VmmIdentities;

  constructor(private readonly o: UnjailedConfinementOptions) {
    this.identities = new VmmIdentities({ uidBase: o.uidBase ?? 500_000, uidCount: o.uidCount ?? 65_536, cgroupName: o.cgroupName, what: 'Firecracker' });
  }

  async acquire(id: string, limits: { vcpus: number; memoryMib: number }, files: ConfinementFiles, firecrackerPath: string): Promise<VmmConfinement> {
    const devices = (await Promise.all([...KVM_DEVICES, ...(files.network ? ['/dev/net/tun'] : [])].map(async (d) => ((await stat(d).catch(() => undefined)) ? d : undefined)))).filter(
      (d): d is string => d !== undefined,
    );
    // Firecracker opens /dev/kvm as the VM's uid: through the device's group, as with the jailer.
    const kvmGid = await stat('/dev/kvm').then(
      (s) => s.gid,
      () => undefined,
    );
    const args = [
      '--unshare-pid',
      '--unshare-ipc',
      '--unshare-uts',
      '--unshare-cgroup-try',
      ...(files.network ? [] : ['--unshare-net']),
      '--new-session',
      '--clearenv',
      // bwrap makes a bound path's missing parents mode 0700: Firecracker (not root) must pass them.
      ...ancestors(['/dev/null', ...devices, ...files.readOnly, files.dir, firecrackerPath]).flatMap((d) => ['--perms', '0755', '--dir', d]),
      ...(await hostRootArgs(firecrackerPath)),
      '--dev-bind',
      '/dev/null',
      '/dev/null',
      ...devices.flatMap((d) => ['--dev-bind', d, d]),
      ...files.readOnly.flatMap((p) => ['--ro-bind', p, p]),
      '--bind',
      files.dir,
      files.dir,
      '--remount-ro',
      '/',
      '--chdir',
      files.dir,
    ];
    const identity = await this.identities.acquire(id, { memoryBytes: vmmMemoryLimitBytes(limits.memoryMib), pidsMax: 64 + limits.vcpus, cpus: limits.vcpus + 0.25 });
    const setprivArgs = [
      '/usr/bin/setpriv',
      '--reuid',
      String(identity.uid),
      '--regid',
      String(identity.gid),
      ...(kvmGid !== undefined && kvmGid !== 0 ? ['--groups', String(kvmGid)] : ['--clear-groups']),
      '--inh-caps=-all',
      '--bounding-set=-all',
      '--',
    ];
    return Object.assign(identity, { bwrapPath: this.o.bwrapPath ?? 'bwrap', bwrapArgs: args, setprivArgs });
  }

  /** The uid and cgroup of a VM an earlier run of the service left running (reattach). */
  async adopt(name: string, uid: number, pids: number[]): Promise<VmmConfinement> {
    const identity = await this.identities.adopt(name, uid, pids);
    return Object.assign(identity, { bwrapPath: this.o.bwrapPath ?? 'bwrap', bwrapArgs: [], setprivArgs: [] });
  }

  pids(): number[] {
    return this.identities.pids();
  }

  /** Start-up scan: cgroups no live VM of this instance holds. */
  scan(): Promise<string[]> {
    return this.identities.scan();
  }

  close(): Promise<void> {
    return this.identities.close();
  }
}

/** Every directory above the given paths, parents first (`/` and /usr excluded). */
export function ancestors(paths: string[]): string[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i < parts.length; i++) dirs.add(`/${parts.slice(0, i).join('/')}`);
  }
  return [...dirs].filter((d) => d !== '/usr' && !d.startsWith('/usr/')).sort((a, b) => a.split('/').length - b.split('/').length || a.localeCompare(b));
}
