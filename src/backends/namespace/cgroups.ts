/**
 * Per-sandbox cgroups for memory, pids and cpu, on cgroup v1 (one hierarchy per controller) and
 * v2 (unified). Every sandbox cgroup lives under a `kiln` parent below the service's own cgroup,
 * so the start-up scan can find and remove what a crashed service left.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface CgroupLimits {
  memoryBytes: number;
  pidsMax: number;
  cpus: number;
}

export type CgroupVersion = 1 | 2;

const CGROUP_ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
const CPU_PERIOD_US = 100_000;

export interface CgroupLayout {
  version: CgroupVersion;
  /** Parent directories holding the per-sandbox groups, one per v1 controller or one for v2. */
  parents: Record<string, string>;
}

/** Finds where this service may create sandbox cgroups. Throws with a fix when it cannot. */
export function detectCgroupLayout(name = 'kiln'): CgroupLayout {
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) {
    const self = ownPath('');
    return { version: 2, parents: { unified: join(CGROUP_ROOT, self, name) } };
  }
  const parents: Record<string, string> = {};
  for (const c of V1_CONTROLLERS) {
    const mount = join(CGROUP_ROOT, c);
    if (!existsSync(join(mount, 'cgroup.procs'))) throw new Error(`cgroup v1 controller "${c}" is not mounted at ${mount}: mount it or boot with cgroup v2`);
    parents[c] = join(mount, ownPath(c), name);
  }
  return { version: 1, parents };
}

/** This process's cgroup path for a v1 controller ('' = the v2 unified hierarchy). */
function ownPath(controller: string): string {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, ctrls, path] = line.split(':');
    if (ctrls === undefined || path === undefined) continue;
    if (controller === '' ? ctrls === '' : ctrls.split(',').includes(controller)) return path;
  }
  return '/';
}

export async function prepareLayout(layout: CgroupLayout): Promise<void> {
  for (const dir of Object.values(layout.parents)) await mkdir(dir, { recursive: true });
  if (layout.version === 2) {
    // v2 forbids processes in inner nodes that delegate controllers: enable them on the kiln node.
    const parent = layout.parents.unified!;
    await writeFile(join(parent, '..', 'cgroup.subtree_control'), '+memory +pids +cpu').catch(() => undefined);
    await writeFile(join(parent, 'cgroup.subtree_control'), '+memory +pids +cpu');
  }
}

export class SandboxCgroup {
  private constructor(readonly layout: CgroupLayout, readonly dirs: string[]) {}

  static async create(layout: CgroupLayout, id: string, limits: CgroupLimits): Promise<SandboxCgroup> {
    const dirs = Object.values(layout.parents).map((p) => join(p, id));
    const cg = new SandboxCgroup(layout, []);
    for (const d of dirs) {
      await mkdir(d);
      cg.dirs.push(d);
    }
    try {
      await cg.applyLimits(limits);
    } catch (e) {
      await cg.remove().catch(() => undefined);
      throw e;
    }
    return cg;
  }

  private file(controller: string, name: string): string {
    const dir = this.layout.version === 2 ? this.dirs[0]! : this.dirs[V1_CONTROLLERS.indexOf(controller as (typeof V1_CONTROLLERS)[number])]!;
    return join(dir, name);
  }

  private async applyLimits(l: CgroupLimits): Promise<void> {
    const quota = Math.max(1000, Math.round(l.cpus * CPU_PERIOD_US));
    if (this.layout.version === 2) {
      await writeFile(this.file('memory', 'memory.max'), String(l.memoryBytes));
      await writeFile(this.file('memory', 'memory.swap.max'), '0').catch(() => undefined);
      await writeFile(this.file('pids', 'pids.max'), String(l.pidsMax));
      await writeFile(this.file('cpu', 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      return;
    }
    await writeFile(this.file('memory', 'memory.limit_in_bytes'), String(l.memoryBytes));
    await writeFile(this.file('memory', 'memory.memsw.limit_in_bytes'), String(l.memoryBytes)).catch(() => undefined);
    await writeFile(this.file('pids', 'pids.max'), String(l.pidsMax));
    await writeFile(this.file('cpu', 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    await writeFile(this.file('cpu', 'cpu.cfs_quota_us'), String(quota));
  }

  async addProcess(pid: number): Promise<void> {
    for (const d of this.dirs) await writeFile(join(d, 'cgroup.procs'), String(pid));
  }

  async oomKills(): Promise<number> {
    const name = this.layout.version === 2 ? 'memory.events' : 'memory.oom_control';
    const text = await readFile(this.file('memory', name), 'utf8').catch(() => '');
    const m = /^oom_kill (\d+)$/m.exec(text);
    return m ? Number(m[1]) : 0;
  }

  async memoryBytes(): Promise<number> {
    const name = this.layout.version === 2 ? 'memory.current' : 'memory.usage_in_bytes';
    return Number(await readFile(this.file('memory', name), 'utf8').catch(() => '0')) || 0;
  }

  async pids(): Promise<number> {
    return Number(await readFile(this.file('pids', 'pids.current'), 'utf8').catch(() => '0')) || 0;
  }

  /** Kills every process still inside and removes the directories (retrying while the kernel empties them). */
  async remove(): Promise<void> {
    await removeCgroupDirs(this.dirs);
  }
}

export async function removeCgroupDirs(dirs: string[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const left: string[] = [];
    for (const d of dirs) {
      if (!existsSync(d)) continue;
      await killAll(d);
      try {
        await rmdir(d);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') left.push(d);
      }
    }
    if (left.length === 0) return;
    if (attempt >= 50) throw new Error(`cgroups still busy after 50 attempts: ${left.join(', ')}`);
    dirs = left;
    await sleep(attempt < 10 ? 5 : 50);
  }
}

async function killAll(dir: string): Promise<void> {
  const procs = await readFile(join(dir, 'cgroup.procs'), 'utf8').catch(() => '');
  for (const pid of procs.split('\n').filter(Boolean)) {
    try {
      process.kill(Number(pid), 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
}

/** Start-up scan: every sandbox cgroup under the kiln parents is a leftover of a dead service. */
export async function scanStaleCgroups(layout: CgroupLayout): Promise<string[]> {
  const removed: string[] = [];
  for (const parent of Object.values(layout.parents)) {
    const entries = await readdir(parent, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      await removeCgroupDirs([join(parent, e.name)]);
      removed.push(`cgroup ${join(parent, e.name)}`);
    }
  }
  return removed;
}

/** Removes the per-instance parent cgroups when no sandbox group is left in them (on close). */
export async function removeLayoutParents(layout: CgroupLayout): Promise<void> {
  for (const dir of Object.values(layout.parents)) {
    await rmdir(dir).catch(() => undefined); // still in use or already gone: leave it
  }
}
