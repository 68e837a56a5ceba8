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
  /** Released uids not yet seen free by a scan started after their release: uid → when released. */
  private readonly pending = new Map<number, number>();
  /** Workspace uids taken with claim() (outside the range): the /proc scans look for them too. */
  private readonly claimed = new Set<number>();
  private next = 0;

  constructor(
    private readonly base: number,
    private readonly count: number,
    private readonly procDir = '/proc',
  ) {}

  /** Uids held back because a process still ran as them after their sandbox was deleted (at the last scan). */
  get quarantined(): number[] {
    return [...this.quarantine];
  }

  /** Sorts every released uid into free or quarantined with a scan of /proc made now (probe, tests). */
  async settle(): Promise<void> {
    this.sort(await this.scan());
  }

  async allocate(): Promise<number> {
    let scan = await this.recentScan();
    for (;;) {
      // Nothing awaits from here on: two allocations cannot both take one uid.
      this.sort(scan);
      for (let i = 0; i < this.count; i++) {
        const uid = this.base + ((this.next + i) % this.count);
        if (this.inUse.has(uid) || scan.held.has(uid)) continue;
        this.next = (uid - this.base + 1) % this.count;
        this.inUse.add(uid);
        return uid;
      }
      // A reused scan may predate the end of what held a released or quarantined uid: look again once.
      if (scan.fresh || (!this.pending.size && !this.quarantine.size)) break;
      scan = await this.scan();
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
    this.sort(await this.scan(), uid);
    if (this.inUse.has(uid)) throw new KilnError('SANDBOX_NOT_READY', `uid ${uid} is in use: another sandbox runs on this workspace, or a process of an earlier one is still alive`);
    this.inUse.add(uid);
    return uid;
  }

  /** Marks a uid a reattached sandbox of an earlier run of the service runs as (its processes hold it). */
  adopt(uid: number, claimed: boolean): void {
    if (claimed) this.claimed.add(uid);
    this.inUse.add(uid);
  }

  /**
   * After a sandbox's teardown. The uid is not handed out again until a scan of /proc started
   * after this call finds no process running as it (one that does keeps it quarantined): the next
   * allocation's scan, which serves every release before it, instead of a scan per release.
   */
  release(uid: number): void {
    if (this.inUse.has(uid) && !this.quarantine.has(uid)) this.pending.set(uid, performance.now());
  }

  /**
   * Applies a scan: a released uid it started after is freed or quarantined; a quarantined uid
   * it shows free is freed. A workspace's uid (outside the range) leaves quarantine only through
   * claim() (`claiming`).
   */
  private sort(scan: Scan, claiming?: number): void {
    for (const [uid, at] of this.pending) {
      if (at >= scan.at) continue; // released after the scan began: it may not show what held it
      this.pending.delete(uid);
      if (scan.held.has(uid)) {
        this.quarantine.add(uid);
        this.quarantinedAt = performance.now();
      } else this.inUse.delete(uid);
    }
    for (const uid of this.quarantine) {
      const inRange = uid >= this.base && uid < this.base + this.count;
      if (scan.held.has(uid) || !(inRange || uid === claiming)) continue;
      this.quarantine.delete(uid);
      this.inUse.delete(uid);
    }
  }

  /**
   * For allocations: a scan started at most SCAN_REUSE_MS ago and after the last quarantine is
   * used again. What the scan guards against is long-lived (processes left by a crashed instance,
   * or by a deleted sandbox), which a view that recent shows as well as a new one; the uids this
   * instance hands out are in `inUse` meanwhile, and a released one waits for a scan started
   * after its release. Under load this turns two scans per sandbox (each stats every process on
   * the host) into a few per second.
   */
  private recentScan(): Promise<Scan> {
    const last = this.last;
    if (last && last.at > this.quarantinedAt && performance.now() - last.at < SCAN_REUSE_MS) return last.done.then((held) => ({ at: last.at, held, fresh: false }));
    return this.scan();
  }

  /**
   * A scan of /proc that starts after this call: callers while one is queued share it (a busy
   * host makes several allocations at once, and each scan stats every process). One already
   * running is not joined: it may have begun before the caller's last release.
   */
  private scan(): Promise<Scan> {
    if (this.queued) return this.queued;
    let mine: Promise<Scan> | undefined;
    const start = async (): Promise<Scan> => {
      await this.running?.catch(() => undefined);
      if (this.queued === mine) this.queued = undefined;
      const at = performance.now();
      const done = this.scanProc();
      this.running = done;
      this.last = { at, done };
      return { at, held: await done, fresh: true };
    };
    mine = start();
    this.queued = mine;
    return mine;
  }

  private queued: Promise<Scan> | undefined;
  private running: Promise<Set<number>> | undefined;
  /** The newest scan, and when it started. */
  private last: { at: number; done: Promise<Set<number>> } | undefined;
  private quarantinedAt = -Infinity;

  /**
   * Uids of this range that own a /proc/<pid> entry. The owner is the process's effective uid,
   * or for a non-dumpable one its user namespace's root: a sandbox's processes map only uid 0,
   * which is the sandbox's host uid, so either way it is that uid.
   */
  protected async scanProc(): Promise<Set<number>> {
    const held = new Set<number>();
    const entries = (await readdir(this.procDir)).filter((e) => /^\d+$/.test(e));
    // Synchronous stats in slices: each is a couple of microseconds in the kernel, where an async
    // one is a thread-pool trip and a promise (a busy host lists hundreds of processes). The event
    // loop gets a turn between slices.
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

/** One scan of /proc: when it started, the uids it found held, whether it was made for this caller. */
interface Scan {
  at: number;
  held: Set<number>;
  fresh: boolean;
}

/** /proc entries stat'ed per turn of the event loop. */
const SCAN_SLICE = 128;

/** How old a scan an allocation takes instead of starting one (recentUidsWithProcesses). */
const SCAN_REUSE_MS = 250;

/** The owner of a /proc/<pid> entry, or -1 when the process is gone. */
function procOwner(path: string): number {
  try {
    return statSync(path).uid;
  } catch {
    return -1;
  }
}
