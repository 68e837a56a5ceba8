/**
 * The lower layer (the host directory W) read by relative path, never through a symlink: a path
 * whose ancestor in W is not a real directory does not exist on this side (the overlay could
 * not have shown anything under it either).
 */
import type { Stats } from 'node:fs';
import { lstat, open, readdir, readFile, readlink } from 'node:fs/promises';
import { absPath, childKey, keyOf, type PathKey, parentKey } from './paths.js';

export type EntryType = 'file' | 'directory' | 'symlink';

export interface LowerStat {
  type: EntryType | 'other';
  mode: number;
  size: number;
}

export function typeOfStats(st: Stats): LowerStat['type'] {
  return st.isFile() ? 'file' : st.isDirectory() ? 'directory' : st.isSymbolicLink() ? 'symlink' : 'other';
}

export class LowerTree {
  private readonly stats = new Map<PathKey, Promise<LowerStat | null>>();

  constructor(readonly dir: string) {}

  abs(key: PathKey): Buffer {
    return absPath(this.dir, key);
  }

  /** The entry at `key`, or null when it or a real-directory chain to it is missing. */
  stat(key: PathKey): Promise<LowerStat | null> {
    let p = this.stats.get(key);
    if (!p) {
      p = this.statUncached(key);
      this.stats.set(key, p);
    }
    return p;
  }

  private async statUncached(key: PathKey): Promise<LowerStat | null> {
    if (key !== '') {
      const parent = await this.stat(parentKey(key));
      if (parent?.type !== 'directory') return null;
    }
    try {
      const st = await lstat(this.abs(key));
      return { type: typeOfStats(st), mode: st.mode & 0o7777, size: st.size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return null;
      throw e;
    }
  }

  async children(key: PathKey): Promise<PathKey[]> {
    const names = await readdir(this.abs(key), { encoding: 'buffer' });
    return names.map((n) => childKey(key, keyOf(n))).sort();
  }

  read(key: PathKey): Promise<Buffer> {
    return readFile(this.abs(key));
  }

  readlink(key: PathKey): Promise<Buffer> {
    return readlink(this.abs(key), { encoding: 'buffer' });
  }

  /** The first `bytes` of a file. */
  async head(key: PathKey, bytes: number): Promise<Buffer> {
    const fh = await open(this.abs(key), 'r');
    try {
      const buf = Buffer.alloc(bytes);
      const { bytesRead } = await fh.read(buf, 0, bytes, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
}
