/**
 * The lower layer (the host directory W) read by relative path, never through a symlink: a path
 * whose ancestor in W is not a real directory does not exist on this side (the overlay could
 * not have shown anything under it either).
 */
import type { Stats } from 'node:fs';
import { lstat, readdir, realpath } from 'node:fs/promises';
import { readFileNoFollow, readHeadNoFollow, readlinkNoFollow } from './nofollow.js';
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
  private real?: Promise<string>;

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

  // reads go through the no-follow helpers: W's owner may swap a directory for a symlink
  async read(key: PathKey): Promise<Buffer> {
    return readFileNoFollow(await this.root(), key);
  }

  async readlink(key: PathKey): Promise<Buffer> {
    return readlinkNoFollow(await this.root(), key);
  }

  /** The first `bytes` of a file. */
  async head(key: PathKey, bytes: number): Promise<Buffer> {
    return readHeadNoFollow(await this.root(), key, bytes);
  }

  private root(): Promise<string> {
    this.real ??= realpath(this.dir);
    return this.real;
  }
}
