/**
 * The microVM backends' use of the cgroup code (cgroups.ts, v1 and v2): one
 * parent per service instance (`kiln-vmm-…` below the service's own cgroup) with one group per
 * VMM. Adds what the VMMs need beyond it: a leftover group of the same name is removed before a
 * new one is made, and the scan keeps the groups of VMs this instance still runs.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { type CgroupLayout, type CgroupLimits, detectCgroupLayout, prepareLayout, removeCgroupDirs, removeLayoutParents, SandboxCgroup } from './cgroups.js';

export type CgroupHandle = Pick<SandboxCgroup, 'addProcess' | 'remove' | 'dirs'>;

export class CgroupAdapter {
  private layout: Promise<CgroupLayout> | undefined;

  constructor(private readonly name: string) {}

  async create(id: string, limits: CgroupLimits): Promise<CgroupHandle> {
    let layout = await this.prepared();
    try {
      return await SandboxCgroup.create(layout, id, limits);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        // Another instance on the same run dir removed the empty parents (its scan or close).
        this.layout = undefined;
        layout = await this.prepared();
      } else if (code === 'EEXIST') {
        // A group a crashed instance left under this name (sandbox ids are reused): its processes
        // are leftovers too.
        await removeCgroupDirs(Object.values(layout.parents).map((p) => join(p, id)));
      } else {
        throw e;
      }
      return SandboxCgroup.create(layout, id, limits);
    }
  }

  /** The group of a VMM an earlier run of the service started (reattached at start). */
  async existing(id: string): Promise<CgroupHandle> {
    return SandboxCgroup.existing(await this.prepared(), id);
  }

  /** Why VMM cgroups cannot be made here, or undefined when they can. */
  problem(): string | undefined {
    try {
      detectCgroupLayout(this.name);
      return undefined;
    } catch (e) {
      return (e as Error).message;
    }
  }

  /** Removes every group not in `keep`, killing what runs in it. */
  async removeStale(keep: ReadonlySet<string>): Promise<string[]> {
    let layout: CgroupLayout;
    try {
      layout = detectCgroupLayout(this.name);
    } catch {
      return []; // no cgroups here: nothing can be left in them
    }
    const stale = new Set<string>();
    for (const parent of Object.values(layout.parents)) {
      for (const e of await readdir(parent, { withFileTypes: true }).catch(() => [])) {
        if (e.isDirectory() && !keep.has(e.name)) stale.add(e.name);
      }
    }
    const removed: string[] = [];
    for (const id of stale) {
      await removeCgroupDirs(Object.values(layout.parents).map((p) => join(p, id)));
      removed.push(`removed stale VMM cgroup ${this.name}/${id}`);
    }
    if (keep.size === 0) await removeLayoutParents(layout); // made again on first use
    return removed;
  }

  /** Removes the parents when empty, also those another instance on the same run dir made. */
  async close(): Promise<void> {
    this.layout = undefined;
    let layout: CgroupLayout;
    try {
      layout = detectCgroupLayout(this.name);
    } catch {
      return;
    }
    await removeLayoutParents(layout);
  }

  private prepared(): Promise<CgroupLayout> {
    this.layout ??= (async () => {
      const layout = detectCgroupLayout(this.name);
      await prepareLayout(layout);
      return layout;
    })();
    this.layout.catch(() => {
      this.layout = undefined;
    });
    return this.layout;
  }
}
