/**
 * One service per run directory. The start-up scan removes every sandbox, cgroup, mount and VMM of
 * its run directory that it does not know: a second service started on the same run directory
 * (another port, a test, an operator's second `kiln serve`) would kill the first one's sandboxes.
 * So the run directory is locked before the scan, and a second service refuses to start, naming the
 * one that holds it.
 *
 * The lock is a file created with O_EXCL holding the holder's pid and its start time in ticks since
 * boot (/proc/<pid>/stat field 22): a holder that died without releasing it (kill -9, a crash) is
 * recognised as gone, and so is a pid that was reused by an unrelated process since.
 */
import { mkdir, open, readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface LockHolder {
  pid: number;
  /** /proc/<pid>/stat start time: with the pid, names one process for the life of the machine. */
  startTicks: string;
  startedAt: string;
  /** Where the holder listens, for the message a second service shows. */
  address?: string;
}

export const LOCK_FILE = 'kiln.lock';

export class InstanceLock {
  private constructor(
    private readonly path: string,
    private readonly holder: LockHolder,
  ) {}

  /** Takes the lock on `runDir`, or throws naming the live service that holds it. */
  static acquire(runDir: string, address?: string): Promise<InstanceLock> {
    return InstanceLock.acquireFile(join(runDir, LOCK_FILE), {
      address,
      mode: 0o644,
      refuse: (holder) =>
        holder
          ? new Error(
              `another kiln service (pid ${holder.pid}${holder.address ? `, ${holder.address}` : ''}, started ${holder.startedAt}) uses the run directory ${runDir}: ` +
                "stop it first, or give this one its own KILN_RUN_DIR (its start-up scan would remove the other's sandboxes)",
            )
          : new Error(`could not take the lock ${join(runDir, LOCK_FILE)}: another service is starting on the same run directory`),
    });
  }

  /**
   * Takes the lock file `path` (its folder is created), or throws `refuse(holder)` for a live
   * holder, this process included, and `refuse(undefined)` when another process took it in between.
   */
  static async acquireFile(path: string, o: { address?: string; mode: number; refuse: (holder: LockHolder | undefined) => Error }): Promise<InstanceLock> {
    await mkdir(dirname(path), { recursive: true, mode: 0o755 });
    const me: LockHolder = { pid: process.pid, startTicks: (await startTicks(process.pid)) ?? '', startedAt: new Date().toISOString(), address: o.address };
    // Two rounds: the second after removing a dead holder's file. Losing that race to another
    // starting process is reported like any live holder.
    for (let round = 0; round < 2; round++) {
      try {
        const fh = await open(path, 'wx', o.mode);
        try {
          await fh.writeFile(`${JSON.stringify(me)}\n`);
        } finally {
          await fh.close();
        }
        return new InstanceLock(path, me);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const holder = await readHolder(path);
      if (holder && (await alive(holder))) throw o.refuse(holder);
      await rm(path, { force: true });
    }
    throw o.refuse(undefined);
  }

  /** Releases the lock if this process still holds it (a later holder's file is left alone). */
  async release(): Promise<void> {
    const holder = await readHolder(this.path);
    if (holder && holder.pid === this.holder.pid && holder.startedAt === this.holder.startedAt) await rm(this.path, { force: true });
  }
}

async function readHolder(path: string): Promise<LockHolder | undefined> {
  try {
    const h = JSON.parse(await readFile(path, 'utf8')) as Partial<LockHolder>;
    return typeof h.pid === 'number' && typeof h.startTicks === 'string' ? (h as LockHolder) : undefined;
  } catch {
    return undefined; // missing, or half-written by a holder that died writing it: not a holder
  }
}

async function alive(h: LockHolder): Promise<boolean> {
  const ticks = await startTicks(h.pid);
  return ticks !== undefined && ticks === h.startTicks;
}

/** Field 22 of /proc/<pid>/stat (after the parenthesised command, which may hold spaces). */
async function startTicks(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (!stat) return undefined;
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
}
