/**
 * File system steps the builder needs to be crash-safe: fsync before rename (so a complete-looking
 * image is always complete), and a recursive delete that refuses to descend into mounts (mmdebstrap
 * mounts /proc, /sys and /dev into the chroot; deleting through a bind mount would hit the host).
 */

import { spawnSync } from 'node:child_process';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** rename() made durable: the data first, then the directory entry. */
export async function durableRename(from: string, to: string): Promise<void> {
  await fsyncPath(from);
  await rename(from, to);
  await fsyncPath(dirname(to));
}

/** Mount points at or below `dir` in this mount namespace, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const points = text
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((p): p is string => p !== undefined)
    // mountinfo escapes space, tab, newline and backslash as octal.
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === dir || p.startsWith(prefix));
  return points.sort((a, b) => b.length - a.length);
}

/**
 * Deletes a build dir. Builds run in their own mount namespace so normally nothing is mounted here;
 * if something is (a build run without it), lazily unmount it first and refuse to delete if that fails.
 */
export async function removeTree(dir: string): Promise<void> {
  for (const point of await mountsUnder(dir)) {
    spawnSync('umount', ['--lazy', point], { stdio: 'ignore' });
  }
  const left = await mountsUnder(dir);
  if (left.length > 0) {
    throw new Error(`refusing to delete ${dir}: still mounted: ${left.join(', ')}; unmount them and delete it by hand`);
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

export function isPidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
