/**
 * Host uids for namespace sandboxes, one per live sandbox. A uid is the sandbox's identity on the
 * host (its files, its signals, its /proc entries), so it is never handed out while any process
 * holds it: delete quarantines the uid of a sandbox a process outlived (a SIGKILL that did not
 * land, a process outside the cgroup), and every allocation skips uids some host process runs as
 * (a survivor of a crashed instance, another kiln instance on the same range). A quarantined uid
 * is released at the first allocation that finds it free.
 */
import { statSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { KilnError } from '../../core/errors.js';
import { isExitedZombie } from '../../core/proc-stat.js';

export class SandboxUids {
  private readonly inUse = new Set<number>();
  private readonly quarantine = new Set<number>();
  /** Workspace uids taken with claim() (outside the range): the /proc scans look for them too. */
  private readonly claimed = new Set<number>();
  private next = 0;

  constructor(
    private readonly base: number,
    private readonly count: number,
    private readonly procDir = '/proc',
  ) {}

  /** Uids held back because a process still runs as them after their sandbox was deleted. */
  get quarantined(): number[] {
    return [...this.quarantine];
  }

  async allocate(): Promise<number> {
    const held = await this.uidsWithProcesses();
    // Nothing awaits from here on: two allocations cannot both take one uid.
    for (const uid of this.quarantine) {
      // A workspace's uid (outside the range, not in `held`) leaves quarantine in claim() only.
      if (held.has(uid) || uid < this.base || uid >= this.base + this.count) continue;
      this.quarantine.delete(uid);
      this.inUse.delete(uid);
    }
    for (let i = 0; i < this.count; i++) {
      const uid = this.base + ((this.next + i) % this.count);
      if (this.inUse.has(uid) || held.has(uid)) continue;
      this.next = (uid - this.base + 1) % this.count;
      this.inUse.add(uid);
      return uid;
    }
    const q = this.quarantine.size ? `; ${this.quarantine.size} quarantined because processes still run as them (${this.quarantined.slice(0, 5).join(', ')})` : '';
    throw new KilnError('AT_CAPACITY', `no free sandbox uid left in ${this.base}..${this.base + this.count - 1}${q}`);
  }

  /**
   * Takes one given uid (a workspace's, which owns its upper layer) instead of allocating one. It
   * lies outside the allocated range, so only another sandbox of the same workspace or a process
   * left running as it can hold it: both refuse.
   */
  async claim(uid: number): Promise<number> {
    if (uid >= this.base && uid < this.base + this.count)
      throw new KilnError('INVALID_REQUEST', `uid ${uid} is in the sandbox uid range ${this.base}..${this.base + this.count - 1}; a workspace needs its own uid outside it`);
    this.claimed.add(uid);
    const held = (await this.uidsWithProcesses()).has(uid);
    if (!held && this.quarantine.delete(uid)) this.inUse.delete(uid);
    if (held || this.inUse.has(uid)) throw new KilnError('SANDBOX_NOT_READY', `uid ${uid} is in use: another sandbox runs on this workspace, or a process of an earlier one is still alive`);
    this.inUse.add(uid);
    return uid;
  }

  /** Marks a uid a reattached sandbox of an earlier run of the service runs as (its processes hold it). */
  adopt(uid: number, claimed: boolean): void {
    if (claimed) this.claimed.add(uid);
    this.inUse.add(uid);
  }

  /** After a sandbox's teardown: frees its uid, or quarantines it while a process still holds it. Returns true when quarantined. */
  async release(uid: number): Promise<boolean> {
    if ((await this.uidsWithProcesses()).has(uid)) {
      this.quarantine.add(uid);
      return true;
    }
    this.inUse.delete(uid);
    return false;
  }

  /**
   * A scan of /proc that starts after this call: callers while one is queued share it (a busy
   * host makes several allocations and releases at once, and each scan stats every process).
   * One already running is not joined: a release must see the processes as they are after its
   * sandbox's teardown.
   */
  private uidsWithProcesses(): Promise<Set<number>> {
    if (this.queued) return this.queued;
    let mine: Promise<Set<number>> | undefined;
    const start = async (): Promise<Set<number>> => {
      await this.running?.catch(() => undefined);
      if (this.queued === mine) this.queued = undefined;
      this.running = this.scanProc();
      return this.running;
    };
    mine = start();
    this.queued = mine;
    return mine;
  }

  private queued: Promise<Set<number>> | undefined;
  private running: Promise<Set<number>> | undefined;

  /**
   * Uids of this range that own a /proc/<pid> entry. The owner is the process's effective uid,
   * or for a non-dumpable one its user namespace's root: a sandbox's processes map only uid 0,
   * which is the sandbox's host uid, so either way it is that uid.
   */
  protected async scanProc(): Promise<Set<number>> {
    const held = new Set<number>();
    const entries = (await readdir(this.procDir)).filter((e) => /^\d+$/.test(e));
    // Synchronous stats in slices: each is a couple of microseconds in the kernel, where an async
    // one is a thread-pool trip and a promise (a busy host lists hundreds of processes, and this
    // ran for every sandbox start and end). The event loop gets a turn between slices.
    for (let i = 0; i < entries.length; i += SCAN_SLICE) {
      if (i > 0) await new Promise((r) => setImmediate(r));
      for (const e of entries.slice(i, i + SCAN_SLICE)) {
        const uid = procOwner(`${this.procDir}/${e}`);
        if (!((uid >= this.base && uid < this.base + this.count) || this.claimed.has(uid))) continue;
        // An exited zombie holds nothing: a kept sandbox's bwrap, orphaned by an earlier run of the service, waits there for init to reap it.
        if (!isExitedZombie(`${this.procDir}/${e}`)) held.add(uid);
      }
    }
    return held;
  }
}

/** /proc entries stat'ed per turn of the event loop. */
const SCAN_SLICE = 128;

/** The owner of a /proc/<pid> entry, or -1 when the process is gone. */
function procOwner(path: string): number {
  try {
    return statSync(path).uid;
  } catch {
    return -1;
  }
}
