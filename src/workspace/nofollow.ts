/**
 * Reads under a directory without following a symlink on the way. The sandbox can swap an upper
 * entry for a symlink (and the host's owner a directory of W) between the scan and a read; kiln
 * reads as root, so a plain readFile could return a host file such as /etc/shadow into a diff or
 * into W. The parent is opened O_DIRECTORY|O_NOFOLLOW and proven, through its /proc/self/fd
 * link, to be the real <root>/<parent>; the entry is then reached through that descriptor.
 */
import { constants } from 'node:fs';
import { type FileHandle, open, readlink } from 'node:fs/promises';
import { KilnError } from '../core/errors.js';
import { absPath, bytesOf, lossyOf, type PathKey, parentKey } from './paths.js';

/** Opens `<root>/<dir>` as a directory with no symlink anywhere below root; root must be a realpath. */
export async function openDirNoFollow(root: string, dir: PathKey): Promise<FileHandle> {
  const fh = await open(absPath(root, dir), constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW).catch((e) => {
    throw swapped(e, dir);
  });
  const real = await readlink(`/proc/self/fd/${fh.fd}`, { encoding: 'buffer' }).catch(() => undefined);
  if (!real?.equals(absPath(root, dir))) {
    await fh.close();
    throw new KilnError('PATH_ESCAPE', `${lossyOf(dir) || '.'} changed into a symlink while kiln read it; list the changes again`);
  }
  return fh;
}

/** ELOOP (a symlink met with O_NOFOLLOW) or ENOTDIR (no directory any more): the path was swapped. */
function swapped(e: unknown, key: PathKey): unknown {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ELOOP' || code === 'ENOTDIR' ? new KilnError('PATH_ESCAPE', `${lossyOf(key) || '.'} is no longer what the scan saw (a symlink now?); list the changes again`, { cause: e }) : e;
}

/** Runs `fn` on `/proc/self/fd/<parent>/<name>`, the parent pinned as above. */
export async function atPinnedParent<T>(root: string, key: PathKey, fn: (path: Buffer) => Promise<T>): Promise<T> {
  const parent = parentKey(key);
  const fh = await openDirNoFollow(root, parent);
  try {
    const name = parent === '' ? key : key.slice(parent.length + 1);
    return await fn(Buffer.concat([Buffer.from(`/proc/self/fd/${fh.fd}/`), bytesOf(name)]));
  } finally {
    await fh.close();
  }
}

/** A regular file's bytes; a symlink or anything else at the path is an error. */
export function readFileNoFollow(root: string, key: PathKey): Promise<Buffer> {
  return atPinnedParent(root, key, async (p) => {
    const fh = await open(p, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((e) => {
      throw swapped(e, key);
    });
    try {
      if (!(await fh.stat()).isFile()) throw new KilnError('PATH_ESCAPE', `${lossyOf(key)} is no longer a regular file; list the changes again`);
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  });
}

/** The first `bytes` of a regular file. */
export function readHeadNoFollow(root: string, key: PathKey, bytes: number): Promise<Buffer> {
  return atPinnedParent(root, key, async (p) => {
    const fh = await open(p, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch((e) => {
      throw swapped(e, key);
    });
    try {
      if (!(await fh.stat()).isFile()) throw new KilnError('PATH_ESCAPE', `${lossyOf(key)} is no longer a regular file; list the changes again`);
      const buf = Buffer.alloc(bytes);
      const { bytesRead } = await fh.read(buf, 0, bytes, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  });
}

export function readlinkNoFollow(root: string, key: PathKey): Promise<Buffer> {
  return atPinnedParent(root, key, (p) => readlink(p, { encoding: 'buffer' }));
}
