/**
 * Start-up scan: a previous (crashed) kiln may have left Firecracker processes and their
 * directories behind. A process is ours only when it is a firecracker/jailer binary AND it points
 * into this service's directories (an argument, its cwd, or its chroot); nothing else is touched.
 */
import { readdir, readFile, readlink, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { killLeftovers } from '../../core/kill-ladder.js';

export interface ScanDirs {
  /** Directories kiln owns exclusively: VM dirs, the jail base. Everything under them is removed. */
  ownedDirs: string[];
  /** Where templates live; only incomplete ones (no `complete` marker) are removed. */
  templatesDir?: string;
  /** For tests: an alternative /proc. */
  procDir?: string;
  /** What a reattach took over: entries of the owned dirs and processes left alone. */
  keep?: { entries: ReadonlySet<string>; pids: ReadonlySet<number> };
}

export interface OrphanProcess {
  pid: number;
  argv: string[];
  why: string;
}

export async function findOrphans(dirs: ScanDirs): Promise<OrphanProcess[]> {
  const proc = dirs.procDir ?? '/proc';
  const owned = dirs.ownedDirs.map((d) => d.replace(/\/+$/, ''));
  const inOwned = (p: string | undefined): boolean => !!p && owned.some((d) => p === d || p.startsWith(`${d}/`));
  const found: OrphanProcess[] = [];
  for (const name of await readdir(proc).catch(() => [] as string[])) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    const raw = await readFile(join(proc, name, 'cmdline')).catch(() => undefined);
    if (!raw || raw.length === 0) continue;
    const argv = raw
      .toString('utf8')
      .split('\0')
      .filter((a, i, all) => a !== '' || i < all.length - 1);
    const exe = basename(argv[0] ?? '');
    if (!/firecracker|jailer/.test(exe)) continue;
    const arg = argv.find((a) => inOwned(a));
    const cwd = await readlink(join(proc, name, 'cwd')).catch(() => undefined);
    const root = await readlink(join(proc, name, 'root')).catch(() => undefined);
    const why = arg ? `argument ${arg}` : inOwned(cwd) ? `cwd ${cwd}` : root !== '/' && inOwned(root) ? `chroot ${root}` : undefined;
    if (why) found.push({ pid, argv, why });
  }
  return found;
}

export async function scanLeftovers(dirs: ScanDirs): Promise<string[]> {
  const removed: string[] = [];
  const orphans = (await findOrphans(dirs)).filter((o) => !dirs.keep?.pids.has(o.pid));
  const { killed, stuck } = await killLeftovers(
    orphans.map((o) => o.pid),
    3_000,
    dirs.procDir,
  );
  for (const o of orphans) {
    if (stuck.includes(o.pid)) removed.push(`could not kill orphaned Firecracker process ${o.pid} (${o.why})`);
    else if (killed.includes(o.pid)) removed.push(`killed orphaned Firecracker process ${o.pid} (${o.why})`);
  }
  for (const dir of dirs.ownedDirs) {
    for (const entry of await readdir(dir).catch(() => [] as string[])) {
      if (dirs.keep?.entries.has(entry)) continue;
      await rm(join(dir, entry), { recursive: true, force: true });
      removed.push(`removed ${join(dir, entry)}`);
    }
  }
  if (dirs.templatesDir) {
    for (const entry of await readdir(dirs.templatesDir).catch(() => [] as string[])) {
      const dir = join(dirs.templatesDir, entry);
      const complete = await readFile(join(dir, 'complete')).then(
        () => true,
        () => false,
      );
      if (complete) continue;
      await rm(dir, { recursive: true, force: true });
      removed.push(`removed incomplete template ${dir}`);
    }
  }
  return removed;
}
