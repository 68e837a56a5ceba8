/** One side of a change as bytes, for `GET …/changes/content?side=old|new` (the dashboard's merge view). */
import { type Change, keyOfChange } from './changes.js';
import { LowerTree } from './lower.js';
import { bytesOf } from './paths.js';
import type { UpperSource } from './scan.js';

/**
 * `old` reads W, `new` the upper layer; a symlink's side is its target. Undefined when that side
 * has no file or symlink (an added path's old side, a deleted one's new side, a directory).
 */
export async function changeContent(lowerDir: string, upper: UpperSource, change: Change, side: 'old' | 'new'): Promise<Buffer | undefined> {
  const key = keyOfChange(change);
  if (side === 'old') {
    const type = change.status === 'added' ? undefined : (change.typeOld ?? change.type);
    const lower = new LowerTree(lowerDir);
    if (type === 'file') return lower.read(key);
    if (type === 'symlink') return lower.readlink(key);
    return undefined;
  }
  if (change.status === 'deleted') return undefined;
  if (change.type === 'file') return upper.read(bytesOf(key));
  if (change.type === 'symlink') return upper.readlink(bytesOf(key));
  return undefined;
}
