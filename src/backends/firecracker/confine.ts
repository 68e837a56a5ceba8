/**
 * Firecracker without its jailer, confined as the jailer (and kiln's QEMU jail) would: its own
 * host uid/gid from a range, its own cgroup (memory = guest RAM + VMM overhead, pids, CPU), its own
 * mount, pid, IPC, UTS and (without a NIC) network namespaces whose read-only root holds only /usr,
 * /dev/null, the KVM devices and the VM's own files. bwrap (root) builds the namespaces and waits
 * until its child is in the cgroup; `setpriv` drops to the VM's uid before Firecracker runs, so
 * Firecracker opens everything (its files, /dev/kvm) as that uid.
 */
import { stat } from 'node:fs/promises';
import { KilnError } from '../../core/errors.js';
import { UidPool } from '../../core/uids.js';
import { CgroupAdapter, type CgroupHandle } from '../../core/vmm-cgroups.js';
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

/** What the launcher needs to start Firecracker confined (process.ts). */
export interface VmmConfinement {
  name: string;
  uid: number;
  gid: number;
  bwrapPath: string;
  /** bwrap's arguments before `--info-fd`: namespaces, the root, the working directory. */
  bwrapArgs: string[];
  /** The drop to the VM's uid, run inside the namespaces before Firecracker. */
  setprivArgs: string[];
  enter(pid: number): Promise<void>;
  /** Host pids of bwrap and Firecracker once spawned. */
  pids: number[];
  /** Removes the cgroup (killing what is left), then frees the uid; a cgroup that stays busy keeps its uid. */
  release(): Promise<void>;
}

export interface ConfinementFiles {
  /** The VM's directory: Firecracker's cwd, bound read-write. */
  dir: string;
  /** Host files its directory links to (kernel, initramfs, rootfs, snapshot), bound read-only. */
  readOnly: string[];
  /** A NIC needs the host's TAP device: Firecracker stays in the host's network namespace. */
  network: boolean;
}

const KVM_DEVICES = ['/dev/kvm', '/dev/userfaultfd'];

export class UnjailedConfiner {
  private readonly uids: UidPool;
  private readonly cgroups: CgroupAdapter;
  private readonly live = new Map<string, VmmConfinement>();

  constructor(private readonly o: UnjailedConfinementOptions) {
    this.uids = new UidPool(o.uidBase ?? 500_000, o.uidCount ?? 65_536, 'Firecracker');
    this.cgroups = new CgroupAdapter(o.cgroupName);
  }

  async acquire(id: string, limits: { vcpus: number; memoryMib: number }, files: ConfinementFiles, firecrackerPath: string): Promise<VmmConfinement> {
    if (this.live.has(id)) throw new KilnError('INTERNAL', `a Firecracker confinement named ${id} is already in use`);
    const devices = (await Promise.all([...KVM_DEVICES, ...(files.network ? ['/dev/net/tun'] : [])].map(async (d) => (await stat(d).catch(() => undefined)) ? d : undefined)))
      .filter((d): d is string => d !== undefined);
    // Firecracker opens /dev/kvm as the VM's uid: through the device's group, as with the jailer.
    const kvmGid = await stat('/dev/kvm').then((s) => s.gid, () => undefined);
    const args = [
      '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-cgroup-try', ...(files.network ? [] : ['--unshare-net']),
      '--die-with-parent', '--new-session', '--clearenv',
      // bwrap makes a bound path's missing parents mode 0700: Firecracker (not root) must pass them.
      ...ancestors(['/dev/null', ...devices, ...files.readOnly, files.dir, firecrackerPath]).flatMap((d) => ['--perms', '0755', '--dir', d]),
      ...await hostRootArgs(firecrackerPath),
      '--dev-bind', '/dev/null', '/dev/null',
      ...devices.flatMap((d) => ['--dev-bind', d, d]),
      ...files.readOnly.flatMap((p) => ['--ro-bind', p, p]),
      '--bind', files.dir, files.dir,
      '--remount-ro', '/', '--chdir', files.dir,
    ];
    const uid = this.uids.take();
    let cgroup: CgroupHandle;
    try {
      cgroup = await this.cgroups.create(id, { memoryBytes: vmmMemoryLimitBytes(limits.memoryMib), pidsMax: 64 + limits.vcpus, cpus: limits.vcpus + 0.25 });
    } catch (e) {
      this.uids.release(uid);
      throw new KilnError('BOOT_FAILED', `cannot create the cgroup of Firecracker ${id}: ${(e as Error).message}`, { cause: e });
    }
    const setprivArgs = [
      '/usr/bin/setpriv', '--reuid', String(uid), '--regid', String(uid),
      ...(kvmGid !== undefined && kvmGid !== 0 ? ['--groups', String(kvmGid)] : ['--clear-groups']),
      '--inh-caps=-all', '--bounding-set=-all', '--',
    ];
    let released: Promise<void> | undefined;
    const c: VmmConfinement = {
      name: id, uid, gid: uid, bwrapPath: this.o.bwrapPath ?? 'bwrap', bwrapArgs: args, setprivArgs, pids: [],
      enter: (pid) => cgroup.addProcess(pid),
      release: () => {
        released ??= (async () => {
          try {
            await cgroup.remove();
          } finally {
            this.live.delete(id);
          }
          this.uids.release(uid);
        })();
        return released;
      },
    };
    this.live.set(id, c);
    return c;
  }

  pids(): number[] {
    return [...this.live.values()].flatMap((c) => c.pids);
  }

  /** Start-up scan: cgroups no live VM of this instance holds. */
  scan(): Promise<string[]> {
    return this.cgroups.removeStale(new Set(this.live.keys()));
  }

  close(): Promise<void> {
    return this.cgroups.close();
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
