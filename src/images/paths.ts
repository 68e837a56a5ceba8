/**
 * Where the builder keeps things under dataDir. Temp build dirs live on the same filesystem as the
 * images so the final step is a rename, and next to the apt cache so cached .debs can be hard-linked.
 */
import { join } from 'node:path';

export interface ImagePaths {
  imagePath: string;
  manifestPath: string;
}

export function imagesDir(dataDir: string): string {
  return join(dataDir, 'images');
}

export function aptCacheDir(dataDir: string): string {
  return join(dataDir, 'cache', 'apt-archives');
}

export function buildTmpRoot(dataDir: string): string {
  return join(dataDir, 'tmp');
}

/** Temp build dirs are named so prune can find the ones a crashed build left behind. */
export const BUILD_DIR_PREFIX = 'image-build-';

export function imagePaths(dataDir: string, name: string, hash: string): ImagePaths {
  const base = join(imagesDir(dataDir), `${name}-${hash}`);
  return { imagePath: `${base}.sqfs`, manifestPath: `${base}.json` };
}

/** Parses "<name>-<16 hex>.sqfs"; undefined for anything else (temp files, strangers). */
export function parseImageFileName(file: string): { name: string; hash: string } | undefined {
  const m = /^([a-z][a-z0-9-]*)-([0-9a-f]{16})\.sqfs$/.exec(file);
  return m ? { name: m[1]!, hash: m[2]! } : undefined;
}
