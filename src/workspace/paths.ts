/**
 * Workspace paths are raw bytes (a sandbox may create any name Linux allows, non-UTF-8 included).
 * Inside the review code a path is a "key": its bytes as a latin1 string, one char per byte, so
 * it can key a Map, sort in byte order (git's order) and turn back into the exact bytes.
 */
import { join } from 'node:path';

/** A relative path's bytes as a latin1 string ('a/b'); '' is the root. */
export type PathKey = string;

export const keyOf = (rel: Buffer): PathKey => rel.toString('latin1');
export const bytesOf = (key: PathKey): Buffer => Buffer.from(key, 'latin1');
/** The path as UTF-8 text, invalid sequences replaced (for display and the API's `path`). */
export const lossyOf = (key: PathKey): string => bytesOf(key).toString('utf8');

/** `dir/rel` as a Buffer path for node:fs (rel may hold any byte). */
export function absPath(dir: string, key: PathKey): Buffer {
  return key === '' ? Buffer.from(dir) : Buffer.concat([Buffer.from(join(dir, '/')), bytesOf(key)]);
}

export function parentKey(key: PathKey): PathKey {
  const i = key.lastIndexOf('/');
  return i < 0 ? '' : key.slice(0, i);
}

export function childKey(dir: PathKey, name: string): PathKey {
  return dir === '' ? name : `${dir}/${name}`;
}

/** Whether `key` is `dir` or lies under it. */
export function isUnder(key: PathKey, dir: PathKey): boolean {
  return dir === '' || key === dir || key.startsWith(`${dir}/`);
}

/** Ancestors of a key, shallowest first, the root ('') excluded. */
export function ancestorsOf(key: PathKey): PathKey[] {
  const out: PathKey[] = [];
  for (let i = key.indexOf('/'); i >= 0; i = key.indexOf('/', i + 1)) out.push(key.slice(0, i));
  return out;
}

/** Byte order (git's order of paths). */
export const compareKeys = (a: PathKey, b: PathKey): number => (a < b ? -1 : a > b ? 1 : 0);
