/**
 * Start-up scan: QEMU processes a crashed service left behind are found by their command line
 * (`-pidfile <runDir>/qemu/...`, which also carries the `-name kiln-<id>` marker), killed, and
 * their directories and RAM files removed.
 */
import { readdir, readFile, rm } from 'node:fs/promises';

export async function findOrphans(qemuRunDir: string, ownPids: ReadonlySet<number>): Promise<Array<{ pid: number; name: string }>> {
  const found: Array<{ pid: number; name: string }> = [];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (ownPids.has(pid)) continue;
    const argv = (await readFile(`/proc/${pid}/cmdline`).catch(() => Buffer.alloc(0))).toString().split('\0');
    const pidfile = argv[argv.indexOf('-pidfile') + 1];
    const nameArg = argv[argv.indexOf('-name') + 1] ?? '';
    if (argv.indexOf('-pidfile') < 0 || !pidfile?.startsWith(`${qemuRunDir}/`) || !nameArg.startsWith('kiln-')) continue;
    found.push({ pid, name: nameArg.split(',')[0]! });
  }
  return found;
}

/** Removes every entry of `dir` whose name is not in `keep`. */
export async function removeStale(dir: string, keep: ReadonlySet<string>): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (keep.has(name)) continue;
    await rm(`${dir}/${name}`, { recursive: true, force: true });
    removed.push(`removed stale ${dir}/${name}`);
  }
  return removed;
}
