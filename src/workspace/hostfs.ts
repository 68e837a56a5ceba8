/**
 * Writes into the host directory W without following a symlink anywhere on the way: each parent
 * directory is opened with O_NOFOLLOW, checked to be the real W/<parent> through its
 * /proc/self/fd link, and then used by that link, so a directory swapped for a symlink after the
 * check cannot redirect a write (kiln runs as root; W belongs to someone else).
 */
import { type FileHandle, realpath, stat } from 'node:fs/promises';
import { KilnError } from '../core/errors.js';
import { openDirNoFollow } from './nofollow.js';
import { absPath, bytesOf, isUnder, lossyOf, type PathKey, parentKey } from './paths.js';

export class HostDir {
  private readonly dirs = new Map<PathKey, Promise<FileHandle>>();

  private constructor(
    readonly root: string,
    readonly uid: number,
    readonly gid: number,
  ) {}

  /** W, resolved; new entries get W's owner. */
  static async open(hostDir: string): Promise<HostDir> {
    const root = await realpath(hostDir);
    const st = await stat(root);
    return new HostDir(root, st.uid, st.gid);
  }

  abs(key: PathKey): Buffer {
    return absPath(this.root, key);
  }

  /** A path to `key` through its pinned parent directory. */
  async at(key: PathKey): Promise<Buffer> {
    const parent = parentKey(key);
    let p = this.dirs.get(parent);
    if (!p) {
      p = this.pin(parent);
      this.dirs.set(parent, p);
      p.catch(() => this.dirs.delete(parent));
    }
    const fh = await p;
    const name = parent === '' ? key : key.slice(parent.length + 1);
    return Buffer.concat([Buffer.from(`/proc/self/fd/${fh.fd}/`), bytesOf(name)]);
  }

  private async pin(dir: PathKey): Promise<FileHandle> {
    try {
      return await openDirNoFollow(this.root, dir);
    } catch (e) {
      if ((e as { code?: string }).code !== 'PATH_ESCAPE' && (e as NodeJS.ErrnoException).code !== 'ELOOP' && (e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw e;
      throw new KilnError('WORKSPACE_CONFLICT', `the host path ${lossyOf(dir)} is no longer a plain directory (a symlink, or moved); fix it on the host and approve again`, {
        details: { conflicts: [lossyOf(dir)] },
        cause: e,
      });
    }
  }

  /** Forgets pinned directories at or under `key` (it was removed or replaced). */
  async forget(key: PathKey): Promise<void> {
    for (const [k, p] of [...this.dirs]) {
      if (!isUnder(k, key)) continue;
      this.dirs.delete(k);
      await p.then((fh) => fh.close()).catch(() => {});
    }
  }

  async close(): Promise<void> {
    await this.forget('');
  }
}
