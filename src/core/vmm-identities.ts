/**
 * A confined VMM's host identity, the same for QEMU's jail (backends/qemu/jail.ts) and unjailed
 * Firecracker (backends/firecracker/confine.ts): its own uid (gid = uid) from a range, and its own
 * cgroup under the instance's VMM parent (vmm-cgroups.ts). Release removes the cgroup first,
 * killing what is left in it, and frees the uid only when that worked: a uid is never handed to
 * another VM while a process of the old one may still run as it.
 */
import { createHash } from 'node:crypto';
import type { CgroupLimits } from './cgroups.js';
import { KilnError } from './errors.js';
import { UidPool } from './uids.js';
import { CgroupAdapter, type CgroupHandle } from './vmm-cgroups.js';

export interface VmmIdentityOptions {
  uidBase: number;
  uidCount: number;
  /** Parent cgroup of this instance's VMMs (one per run dir). */
  cgroupName: string;
  /** Names the VMM in errors ("QEMU", "Firecracker"). */
  what: string;
  /** Told when a cgroup does not empty on release (its uid then stays out of use). */
  onStuck?: (name: string, uid: number, error: Error) => void;
}

export interface VmmIdentity {
  name: string;
  uid: number;
  gid: number;
  /** Puts a (held, not yet exec'd) process into the VM's cgroup. */
  enter(pid: number): Promise<void>;
  /** Host pids of the VM's processes once spawned (bwrap, the VMM): scans leave them alone. */
  pids: number[];
  /** Removes the cgroup, then frees the uid. Idempotent. */
  release(): Promise<void>;
}

export class VmmIdentities {
  private readonly uids: UidPool;
  private readonly cgroups: CgroupAdapter;
  private readonly live = new Map<string, VmmIdentity>();

  constructor(private readonly o: VmmIdentityOptions) {
    this.uids = new UidPool(o.uidBase, o.uidCount, o.what);
    this.cgroups = new CgroupAdapter(o.cgroupName);
  }

  get cgroupName(): string {
    return this.o.cgroupName;
  }

  /** A uid and a cgroup named `name` (the VM's id) with these limits. */
  async acquire(name: string, limits: CgroupLimits): Promise<VmmIdentity> {
    if (this.live.has(name)) throw new KilnError('INTERNAL', `a ${this.o.what} confinement named ${name} is already in use`);
    const uid = this.uids.take();
    let cgroup: CgroupHandle;
    try {
      cgroup = await this.cgroups.create(name, limits);
    } catch (e) {
      this.uids.release(uid);
      throw new KilnError('BOOT_FAILED', `cannot create the cgroup of ${this.o.what} ${name}: ${(e as Error).message}`, { cause: e });
    }
    return this.make(name, uid, cgroup);
  }

  /**
   * The uid and cgroup of a VMM an earlier run of the service started and left running (reattach
   * at start): held again as if acquired, so the scan keeps the cgroup and the uid is not reused.
   */
  async adopt(name: string, uid: number, pids: number[]): Promise<VmmIdentity> {
    if (this.live.has(name)) throw new KilnError('INTERNAL', `a ${this.o.what} confinement named ${name} is already in use`);
    this.uids.adopt(uid);
    let cgroup: CgroupHandle;
    try {
      cgroup = await this.cgroups.existing(name);
    } catch (e) {
      this.uids.release(uid);
      throw e;
    }
    const identity = this.make(name, uid, cgroup);
    identity.pids.push(...pids);
    return identity;
  }

  private make(name: string, uid: number, cgroup: CgroupHandle): VmmIdentity {
    let released: Promise<void> | undefined;
    const identity: VmmIdentity = {
      name,
      uid,
      gid: uid,
      pids: [],
      enter: (pid) => cgroup.addProcess(pid),
      release: () => {
        released ??= (async () => {
          try {
            await cgroup.remove();
          } catch (e) {
            this.o.onStuck?.(name, uid, e as Error);
            throw e;
          } finally {
            this.live.delete(name);
          }
          this.uids.release(uid);
        })();
        return released;
      },
    };
    this.live.set(name, identity);
    return identity;
  }

  /** Why VMM cgroups cannot be made on this host, or undefined. */
  problem(): string | undefined {
    return this.cgroups.problem();
  }

  /** Pids of every confined process this instance started and has not released. */
  pids(): number[] {
    return [...this.live.values()].flatMap((c) => c.pids);
  }

  /** Start-up scan: cgroups under this instance's parent that no live VM holds (a crashed service's). */
  scan(): Promise<string[]> {
    return this.cgroups.removeStale(new Set(this.live.keys()));
  }

  /** Removes the parent cgroups once no VM is left in them. */
  close(): Promise<void> {
    return this.cgroups.close();
  }
}

/**
 * The parent cgroup of one instance's VMMs: `prefix` for the default run dir, else suffixed with a
 * hash of the run dir, so a second instance (tests) never scans the first's VMMs.
 */
export function vmmCgroupName(prefix: string, runDir: string): string {
  return runDir === '/run/kiln' ? prefix : `${prefix}-${createHash('sha256').update(runDir).digest('hex').slice(0, 8)}`;
}
