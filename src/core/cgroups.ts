/**
 * Per-sandbox cgroups for memory, pids and cpu, on cgroup v1 (one hierarchy per controller) and
 * v2 (unified). Every sandbox cgroup lives under a `kiln` parent below the service's own cgroup,
 * so the start-up scan can find and remove what a crashed service left. See docs/security/cgroups.md.
 *
 * A delegated sandbox cgroup (namespace sandboxes) is split in two:
 *
 *   <sandbox>/        limits: memory + agent reserve, pids, cpu
 *   ├── agent/        the agent (PID 1); outside what user code can fill, so a sandbox OOM never picks it
 *   └── user/         memory limit, pids limit - agent reserve; owned by the sandbox uid:
 *       └── exec-<n>/ the agent makes one per exec and kills it whole (cgroup.kill / pids.max=0 + SIGKILL)
 *
 * Where the cpuset controller is there (a v1 hierarchy, or enabled below the service on v2), a
 * group with `cpuList` is confined to those CPUs (core/cpu-sets.ts chooses them); the cpu quota
 * stays, so a fractional limit is still honoured.
 */
import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { formatCpuList } from './cpu-sets.js';

export interface CgroupLimits {
  memoryBytes: number;
  pidsMax: number;
  cpus: number;
  /** Host CPUs the group may run on (cpuset); default: all its parent has. */
  cpuList?: readonly number[];
}

export type CgroupVersion = 1 | 2;

const CGROUP_ROOT = '/sys/fs/cgroup';
const V1_CONTROLLERS = ['memory', 'pids', 'cpu'] as const;
const CPU_PERIOD_US = 100_000;
const V2_CONTROLLERS = ['memory', 'pids', 'cpu'];
/** Used where present (v1: mounted; v2: delegated), never required. */
const OPTIONAL_CPUSET = 'cpuset';
/** On v2 the service moves itself into this leaf of its own cgroup (no processes in inner nodes). */
export const SERVICE_LEAF = 'kiln-service';
/** Memory the agent may use beyond the sandbox's limit, and pids of the limit kept for it (up to a quarter). */
export const AGENT_RESERVE = { memoryBytes: 64 * 1024 * 1024, pids: 64 };

export interface CgroupLayout {
  version: CgroupVersion;
  /** Parent directories holding the per-sandbox groups, one per v1 controller or one for v2. */
  parents: Record<string, string>;
}

/** Finds where this service may create sandbox cgroups. Throws with a fix when it cannot. */
export function detectCgroupLayout(name = 'kiln'): CgroupLayout {
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) {
    let self = ownPath('');
    // prepareLayout moved this process into a leaf of its own cgroup: the base is the one above.
    if (self.endsWith(`/${SERVICE_LEAF}`)) self = self.slice(0, -SERVICE_LEAF.length - 1) || '/';
    return { version: 2, parents: { unified: join(CGROUP_ROOT, self, name) } };
  }
  const parents: Record<string, string> = {};
  for (const c of V1_CONTROLLERS) {
    const mount = join(CGROUP_ROOT, c);
    if (!existsSync(join(mount, 'cgroup.procs'))) throw new Error(`cgroup v1 controller "${c}" is not mounted at ${mount}: mount it or boot with cgroup v2`);
    parents[c] = join(mount, ownPath(c), name);
  }
  const cpuset = join(CGROUP_ROOT, OPTIONAL_CPUSET);
  if (existsSync(join(cpuset, 'cgroup.procs'))) parents[OPTIONAL_CPUSET] = join(cpuset, ownPath(OPTIONAL_CPUSET), name);
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

export interface PrepareOptions {
  /**
   * v2: which processes of the service's own cgroup may move into its kiln-service leaf: 'all'
   * (the service: under Delegate=yes its cgroup is its own) or 'self-only' (kiln doctor: only
   * when it is alone there, never a login shell's processes).
   */
  move?: 'all' | 'self-only';
}

/** Makes the parents. On v2 it enables the controllers down to them, or throws saying why it cannot. */
export async function prepareLayout(layout: CgroupLayout, options: PrepareOptions = {}): Promise<void> {
  if (layout.version === 2) return prepareV2Parent(layout.parents.unified!, options.move ?? 'all');
  for (const dir of Object.values(layout.parents)) await mkdir(dir, { recursive: true });
  if (layout.parents.cpuset) await inheritCpuset(layout.parents.cpuset);
}

/** v1: a new cpuset group starts with no CPUs and no memory nodes (no task may join): take its parent's. */
async function inheritCpuset(dir: string): Promise<void> {
  for (const f of ['cpuset.cpus', 'cpuset.mems']) {
    if ((await readFile(join(dir, f), 'utf8')).trim()) continue;
    await writeFile(join(dir, f), (await readFile(join(dirname(dir), f), 'utf8')).trim());
  }
}

export type CgroupMode = 'v1' | 'hybrid' | 'v2' | 'none';

/** v2: unified only; hybrid: v1 controllers plus a cgroup2 mount at /sys/fs/cgroup/unified. */
export function cgroupMode(): CgroupMode {
  if (existsSync(join(CGROUP_ROOT, 'cgroup.controllers'))) return 'v2';
  if (!existsSync(join(CGROUP_ROOT, 'memory', 'cgroup.procs'))) return 'none';
  return existsSync(join(CGROUP_ROOT, 'unified', 'cgroup.procs')) ? 'hybrid' : 'v1';
}

export interface CgroupProbe {
  mode: CgroupMode;
  /** A delegated sandbox cgroup with limits could be made and removed here. */
  delegation: boolean;
  detail: string;
}

/**
 * What kiln doctor reports: the mode, and whether a real sandbox cgroup (limits, agent/ and a
 * user/ handed to an unprivileged uid) can be created and removed from where this process runs.
 */
export async function probeCgroups(name = `kiln-probe-${process.pid}`): Promise<CgroupProbe> {
  const mode = cgroupMode();
  let layout: CgroupLayout | undefined;
  try {
    layout = detectCgroupLayout(name);
    await prepareLayout(layout, { move: 'self-only' });
    const cg = await SandboxCgroup.create(layout, 'probe', { memoryBytes: 64 * 1024 * 1024, pidsMax: 128, cpus: 1 }, { delegateUid: 65534 });
    await cg.remove();
    const favor = favordynmodsOn()
      ? 'favordynmods on'
      : 'favordynmods off: each sandbox start waits for an RCU grace period to join its cgroup (kiln serve sets it unless KILN_CGROUP_FAVOR_DYNMODS=0)';
    return { mode, delegation: true, detail: `${mode}: sandbox cgroups with memory, pids and cpu limits can be created and delegated under ${Object.values(layout.parents).join(', ')}; ${favor}` };
  } catch (e) {
    return { mode, delegation: false, detail: `${mode}: ${(e as Error).message}` };
  } finally {
    if (layout) {
      await removeCgroupDirs(Object.values(layout.parents).map((p) => join(p, 'probe'))).catch(() => undefined);
      await removeLayoutParents(layout);
    }
  }
}

/**
 * v2: `parent` is <own>/<name>. Controllers must be enabled in <own>'s subtree_control, which v2
 * allows only when <own> holds no processes: as a systemd service with Delegate=yes, <own> is the
 * service's cgroup and holds the service, so its processes move into <own>/kiln-service first.
 */
async function prepareV2Parent(parent: string, move: 'all' | 'self-only'): Promise<void> {
  const own = dirname(parent);
  const fix = 'run kiln as a systemd service with Delegate=yes (packaging/kiln.service), or from a cgroup whose parent delegates memory, pids and cpu';
  const available = words(await readFile(join(own, 'cgroup.controllers'), 'utf8').catch(() => ''));
  const missing = V2_CONTROLLERS.filter((c) => !available.includes(c));
  if (missing.length) throw new Error(`cgroup v2: controller(s) ${missing.join(', ')} not available in ${own}: ${fix}`);
  const enabled = words(await readFile(join(own, 'cgroup.subtree_control'), 'utf8'));
  if (V2_CONTROLLERS.some((c) => !enabled.includes(c))) {
    if (own !== CGROUP_ROOT) await moveProcessesToLeaf(own, move);
    await enableControllers(own, fix);
  }
  await mkdir(parent, { recursive: true });
  await enableControllers(parent, fix);
  // cpuset only where it is delegated; EBUSY (own still holds processes) or ENOENT leave it off.
  if (available.includes(OPTIONAL_CPUSET)) {
    for (const dir of [own, parent]) await writeFile(join(dir, 'cgroup.subtree_control'), `+${OPTIONAL_CPUSET}`).catch(() => undefined);
  }
}

async function enableControllers(dir: string, fix: string): Promise<void> {
  try {
    await writeFile(join(dir, 'cgroup.subtree_control'), V2_CONTROLLERS.map((c) => `+${c}`).join(' '));
  } catch (e) {
    throw new Error(`cgroup v2: cannot enable ${V2_CONTROLLERS.join(', ')} in ${dir}/cgroup.subtree_control (${(e as Error).message}): ${fix}`);
  }
}

async function moveProcessesToLeaf(own: string, move: 'all' | 'self-only'): Promise<void> {
  const leaf = join(own, SERVICE_LEAF);
  const others = words(await readFile(join(own, 'cgroup.procs'), 'utf8')).filter((p) => p !== String(process.pid));
  if (move === 'self-only' && others.length) {
    throw new Error(
      `cgroup v2: controllers are not enabled below ${own}, which holds other processes too (${others.slice(0, 5).join(' ')}): kiln serve moves its cgroup's processes into ${SERVICE_LEAF}/ itself; to probe, run "systemd-run --scope -p Delegate=yes kiln doctor" or check the unit has Delegate=yes`,
    );
  }
  await mkdir(leaf, { recursive: true });
  for (let round = 0; round < 20; round++) {
    const pids = words(await readFile(join(own, 'cgroup.procs'), 'utf8'));
    if (pids.length === 0) return;
    for (const pid of pids) await writeFile(join(leaf, 'cgroup.procs'), pid).catch(() => undefined); // ESRCH: exited meanwhile
  }
  throw new Error(`cgroup v2: processes keep appearing in ${own}; cannot make it an inner node`);
}

function words(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

export interface SandboxCgroupOptions {
  /**
   * Split the group into agent/ and user/ and hand user/ to this host uid, so the agent can make
   * and kill per-exec cgroups there (namespace sandboxes).
   */
  delegateUid?: number;
}

export class SandboxCgroup {
  /** Per hierarchy: the user/ directory handed to the sandbox (empty when not delegated). */
  readonly userDirs: Record<string, string> = {};

  private constructor(
    readonly layout: CgroupLayout,
    readonly dirs: string[],
  ) {}

  /**
   * Directories, limits and delegation are written synchronously: cgroupfs files live in memory
   * and each write is a few microseconds, while an async one is a trip through libuv's thread
   * pool and a promise (about 60 of them per sandbox: a few ms of the service's CPU per sandbox).
   * Moving processes in (addProcess) stays async: it can wait for an RCU grace period.
   */
  static async create(layout: CgroupLayout, id: string, limits: CgroupLimits, options: SandboxCgroupOptions = {}): Promise<SandboxCgroup> {
    const dirs = Object.values(layout.parents).map((p) => join(p, id));
    const cg = new SandboxCgroup(layout, []);
    try {
      for (const d of dirs) {
        mkdirSync(d);
        cg.dirs.push(d);
      }
      const delegated = options.delegateUid !== undefined;
      cg.applyLimits(limits, delegated ? AGENT_RESERVE.memoryBytes : 0);
      if (delegated) cg.delegate(limits, options.delegateUid!);
    } catch (e) {
      await cg.remove().catch(() => undefined);
      throw e;
    }
    return cg;
  }

  /** The group of a sandbox an earlier run of the service made (reattached after a restart). */
  static existing(layout: CgroupLayout, id: string): SandboxCgroup {
    return new SandboxCgroup(
      layout,
      Object.values(layout.parents).map((p) => join(p, id)),
    );
  }

  private dir(controller: string): string {
    return this.layout.version === 2 ? this.dirs[0]! : this.dirs[Object.keys(this.layout.parents).indexOf(controller)]!;
  }

  private file(controller: string, name: string): string {
    return join(this.dir(controller), name);
  }

  private applyLimits(l: CgroupLimits, reserveBytes: number): void {
    const quota = Math.max(1000, Math.round(l.cpus * CPU_PERIOD_US));
    const memory = String(l.memoryBytes + reserveBytes);
    if (this.layout.version === 2) {
      writeFileSync(this.file('memory', 'memory.max'), memory);
      writeOptional(this.file('memory', 'memory.swap.max'), '0');
      writeFileSync(this.file('pids', 'pids.max'), String(l.pidsMax));
      writeFileSync(this.file('cpu', 'cpu.max'), `${quota} ${CPU_PERIOD_US}`);
      const cpus = this.file(OPTIONAL_CPUSET, 'cpuset.cpus');
      if (l.cpuList?.length && existsSync(cpus)) writeFileSync(cpus, formatCpuList(l.cpuList));
      return;
    }
    writeFileSync(this.file('memory', 'memory.limit_in_bytes'), memory);
    writeOptional(this.file('memory', 'memory.memsw.limit_in_bytes'), memory);
    writeFileSync(this.file('pids', 'pids.max'), String(l.pidsMax));
    writeFileSync(this.file('cpu', 'cpu.cfs_period_us'), String(CPU_PERIOD_US));
    writeFileSync(this.file('cpu', 'cpu.cfs_quota_us'), String(quota));
    if (this.layout.parents.cpuset) {
      const dir = this.dir(OPTIONAL_CPUSET);
      const parent = dirname(dir);
      writeFileSync(join(dir, 'cpuset.mems'), readFileSync(join(parent, 'cpuset.mems'), 'utf8').trim());
      writeFileSync(join(dir, 'cpuset.cpus'), l.cpuList?.length ? formatCpuList(l.cpuList) : readFileSync(join(parent, 'cpuset.cpus'), 'utf8').trim());
    }
  }

  /** agent/ and user/ in the hierarchies that track and bound user code; user/ owned by uid. */
  private delegate(l: CgroupLimits, uid: number): void {
    // A quarter at most, so a small pids limit still leaves user code most of it.
    const userPids = String(l.pidsMax - Math.min(AGENT_RESERVE.pids, Math.floor(l.pidsMax / 4)));
    if (this.layout.version === 2) {
      const s = this.dirs[0]!;
      writeFileSync(join(s, 'cgroup.subtree_control'), '+memory +pids +cpu');
      mkdirSync(join(s, 'agent'));
      const user = join(s, 'user');
      mkdirSync(user);
      writeFileSync(join(user, 'memory.max'), String(l.memoryBytes));
      writeOptional(join(user, 'memory.swap.max'), '0');
      writeFileSync(join(user, 'pids.max'), userPids);
      // Moving a process from agent/ to user/exec-<n> needs write access to the common ancestor's cgroup.procs.
      for (const f of ['', 'cgroup.procs', 'cgroup.subtree_control', 'cgroup.threads']) chownSync(join(user, f), uid, uid);
      chownSync(join(s, 'cgroup.procs'), uid, uid);
      this.userDirs.unified = user;
      return;
    }
    for (const c of ['memory', 'pids'] as const) {
      const s = this.dir(c);
      mkdirSync(join(s, 'agent'));
      const user = join(s, 'user');
      mkdirSync(user);
      if (c === 'memory') {
        writeFileSync(join(user, 'memory.limit_in_bytes'), String(l.memoryBytes));
        writeOptional(join(user, 'memory.memsw.limit_in_bytes'), String(l.memoryBytes));
      } else {
        writeFileSync(join(user, 'pids.max'), userPids);
      }
      // tasks: the agent moves one thread of its own at a time into an exec's cgroups to fork it there (agent/execstart_linux.go).
      for (const f of ['', 'cgroup.procs', 'tasks']) chownSync(join(user, f), uid, uid);
      this.userDirs[c] = user;
    }
  }

  /** Puts pid into the group (into agent/ where the group is delegated). */
  async addProcess(pid: number): Promise<void> {
    for (const f of this.procsFiles()) await writeFile(f, String(pid));
  }

  /** The cgroup.procs files a sandbox's first process is written to (its agent/ part where there is one). */
  procsFiles(): string[] {
    return this.dirs.map((d) => {
      const agent = join(d, 'agent');
      return join(existsSync(agent) ? agent : d, 'cgroup.procs');
    });
  }

  /** OOM kills of user code (v1 counts them only in the cgroup the victim was in: user/). */
  async oomKills(): Promise<number> {
    const text =
      this.layout.version === 2
        ? await readFile(this.file('memory', 'memory.events'), 'utf8').catch(() => '')
        : await readFile(join(this.userDirs.memory ?? this.dir('memory'), 'memory.oom_control'), 'utf8').catch(() => '');
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

  /**
   * Kills every process still inside and removes the directories (retrying while the kernel
   * empties them). A sandbox's processes are usually gone by then (its PID 1 died, which ends its
   * pid namespace): the groups it is known to have are removed as they are first, and only what
   * is still busy (or has more in it) goes through the kill-and-retry removal.
   */
  async remove(): Promise<void> {
    let busy = this.dirs.filter((d) => !removeIfEmpty(d));
    // Measured under load: in about half the teardowns the sandbox's PID 1 is still in the group
    // here (exiting, or a zombie not yet reaped), although bwrap's exit was seen; it is gone a few
    // ms later. Waiting for that is cheaper than the kill-and-retry pass below (for live processes).
    for (let i = 0; busy.length && i < 10; i++) {
      await sleep(2);
      busy = busy.filter((d) => !removeIfEmpty(d));
    }
    await removeCgroupDirs(busy);
  }
}

/**
 * Removes dir and its agent/ and user/ (with what the sandbox made under user/, the agent's
 * per-exec groups included) when no process is in them; false when one is (or the removal failed).
 */
function removeIfEmpty(dir: string): boolean {
  // Synchronous: cgroupfs lives in memory, and a sandbox's teardown removes about ten of these.
  return removeEmptyTree(join(dir, 'agent')) && removeEmptyTree(join(dir, 'user')) && removeEmptyTree(dir);
}

/** rmdir, and where that fails because of child groups, the children's trees first; true once gone. */
function removeEmptyTree(dir: string): boolean {
  const tryRmdir = (): string | undefined => {
    try {
      rmdirSync(dir);
      return undefined;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code;
    }
  };
  let code = tryRmdir();
  if (code === undefined || code === 'ENOENT') return true;
  let children: string[];
  try {
    children = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return false;
  }
  if (children.length === 0 || !children.every(removeEmptyTree)) return false; // processes inside
  code = tryRmdir();
  return code === undefined || code === 'ENOENT';
}

/** A limit file the kernel may not have (swap accounting off): skipped, as before. */
function writeOptional(path: string, value: string): void {
  try {
    writeFileSync(path, value);
  } catch {
    /* not there: nothing to limit */
  }
}

/** Kills everything in each directory's subtree, then removes the subtree bottom-up. */
export async function removeCgroupDirs(dirs: string[]): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const left: string[] = [];
    for (const d of dirs) {
      if (!existsSync(d)) continue;
      if (!(await removeTree(d))) left.push(d);
    }
    if (left.length === 0) return;
    if (attempt >= 50) throw new Error(`cgroups still busy after 50 attempts: ${left.join(', ')}`);
    dirs = left;
    await sleep(attempt < 10 ? 5 : 50);
  }
}

/** One pass: stop forks, kill, remove children first. False when something is still busy. */
async function removeTree(dir: string): Promise<boolean> {
  // v2: cgroup.kill ends the whole subtree at once; v1: pids.max=0 stops forks in the subtree so the kill loop converges.
  if (
    !(await writeFile(join(dir, 'cgroup.kill'), '1').then(
      () => true,
      () => false,
    ))
  ) {
    await writeFile(join(dir, 'pids.max'), '0').catch(() => undefined);
  }
  await killAll(dir);
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  let removed = true;
  for (const e of entries) if (e.isDirectory() && !(await removeTree(join(dir, e.name)))) removed = false;
  if (!removed) return false;
  try {
    await rmdir(dir);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT';
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

/** Start-up scan: every sandbox cgroup under the kiln parents but the kept ones is a leftover of a dead service. */
export async function scanStaleCgroups(layout: CgroupLayout, keep: ReadonlySet<string> = new Set()): Promise<string[]> {
  const removed: string[] = [];
  for (const parent of Object.values(layout.parents)) {
    const entries = await readdir(parent, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      if (!e.isDirectory() || keep.has(e.name)) continue;
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

/**
 * What favorDynamicModifications() found or did: `set` (switched on now), `already` (on before),
 * or `failed` with the reason (an older kernel, no cgroup2 mount, not root).
 */
export type FavorDynmods = { state: 'set' | 'already'; mount: string } | { state: 'failed'; error: string };

/**
 * A sandbox's first process joins its cgroup by a write to cgroup.procs, which takes the kernel's
 * cgroup_threadgroup_rwsem for writing. In its default mode that waits for an RCU grace period each
 * time the lock was idle, ~9 ms per sandbox start on these machines, more than all the rest of
 * the cgroup work. The cgroup2 mount option `favordynmods` (Linux 6.0+) keeps the lock in the
 * mode where a migration is immediate, making forks and exits host-wide slightly dearer (the
 * lock's read side, taken at each, is no longer per-CPU only). The lock is one for all
 * hierarchies, so the cgroup2 mount (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` beside v1
 * controllers) is remounted with its own options plus this one. Off with KILN_CGROUP_FAVOR_DYNMODS=0.
 */
export async function favorDynamicModifications(mountinfo = '/proc/self/mountinfo'): Promise<FavorDynmods> {
  const text = await readFile(mountinfo, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    // "id parent dev root mountpoint mountopts [optional…] - fstype source superopts"
    const [pre, post] = line.split(' - ');
    if (!pre || !post) continue;
    const [fstype, , superOpts = ''] = post.split(' ');
    if (fstype !== 'cgroup2') continue;
    const mount = pre.split(' ')[4]!.replace(/\\040/g, ' ');
    const opts = superOpts.split(',').filter(Boolean);
    if (opts.includes('favordynmods')) return { state: 'already', mount };
    try {
      await runMount(['-o', ['remount', ...opts, 'favordynmods'].join(','), mount]);
      return { state: 'set', mount };
    } catch (e) {
      return { state: 'failed', error: `mount -o remount,favordynmods ${mount}: ${(e as Error).message}` };
    }
  }
  return { state: 'failed', error: 'no cgroup2 hierarchy is mounted (cgroup v1 only)' };
}

/** Whether a cgroup2 mount has favordynmods (see favorDynamicModifications). */
export function favordynmodsOn(mountinfo = '/proc/self/mountinfo'): boolean {
  const text = existsSync(mountinfo) ? readFileSync(mountinfo, 'utf8') : '';
  return text.split('\n').some((l) => {
    const post = l.split(' - ')[1]?.split(' ');
    return post?.[0] === 'cgroup2' && (post[2] ?? '').split(',').includes('favordynmods');
  });
}

function runMount(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('mount', args, { timeout: 5000 }, (e, _out, stderr) => (e ? reject(new Error(stderr.trim() || e.message)) : resolve()));
  });
}
