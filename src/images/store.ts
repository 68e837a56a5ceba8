/**
 * The images directory as a store: which images exist, which is current for a pack, and removal
 * of the ones no definition points at any more. An image counts only when both its .sqfs and its
 * manifest exist; the builder renames the manifest first and the .sqfs last.
 */
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { KilnError } from '../core/errors.js';
import { treeBytes } from './customise.js';
import { DEFAULT_PACKS_DIR, loadPack, loadPacks } from './definition.js';
import { isPidAlive, removeTree } from './fsutil.js';
import { imageHash } from './hash.js';
import { BUILD_DIR_PREFIX, buildTmpRoot, imagePaths, imagesDir, parseImageFileName } from './paths.js';
import type { ImageInfo, ImageManifest, PackSources, PruneResult, ResolvedImage } from './types.js';

export async function readManifest(path: string): Promise<ImageManifest | undefined> {
  try {
    const m = JSON.parse(await readFile(path, 'utf8')) as ImageManifest;
    return typeof m.hash === 'string' && typeof m.name === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

/** The image for (name, hash) if it is complete, with its size. */
export async function findComplete(dataDir: string, name: string, hash: string): Promise<{ sizeBytes: number; manifest: ImageManifest } | undefined> {
  const paths = imagePaths(dataDir, name, hash);
  const manifest = await readManifest(paths.manifestPath);
  if (!manifest || manifest.hash !== hash || manifest.name !== name) return undefined;
  try {
    const st = await stat(paths.imagePath);
    return st.isFile() && st.size > 0 ? { sizeBytes: st.size, manifest } : undefined;
  } catch {
    return undefined;
  }
}

// A broken custom definition has no current hash: its images count as stale, nothing throws.
async function currentHashes(packsDir: string | PackSources): Promise<Map<string, string>> {
  return new Map((await loadPacks(packsDir, () => undefined)).map((p) => [p.name, imageHash(p.image)]));
}

export async function listImages(dataDir: string, packsDir: string | PackSources = DEFAULT_PACKS_DIR): Promise<ImageInfo[]> {
  const current = await currentHashes(packsDir);
  const files = await imageFiles(dataDir);
  const images: ImageInfo[] = [];
  for (const file of files) {
    const parsed = parseImageFileName(file);
    if (!parsed) continue;
    const found = await findComplete(dataDir, parsed.name, parsed.hash);
    if (!found) continue;
    images.push({
      ...parsed,
      ...imagePaths(dataDir, parsed.name, parsed.hash),
      sizeBytes: found.sizeBytes,
      builtAt: found.manifest.builtAt,
      current: current.get(parsed.name) === parsed.hash,
    });
  }
  return images;
}

/** The image a sandbox of `name` should boot, or IMAGE_MISSING saying which command builds it. */
export async function resolveImage(name: string, dataDir: string, packsDir: string | PackSources = DEFAULT_PACKS_DIR): Promise<ResolvedImage> {
  const definition = await loadPack(name, packsDir);
  const hash = imageHash(definition.image);
  const found = await findComplete(dataDir, name, hash);
  if (!found) {
    throw new KilnError('IMAGE_MISSING', `pack ${name} has no image; run \`kiln images build ${name}\``, { details: { pack: name, hash } });
  }
  return { name, hash, imagePath: imagePaths(dataDir, name, hash).imagePath, env: definition.env, run: definition.run, definition, tools: found.manifest.tools };
}

/**
 * Removes images whose hash no current definition has (and their manifests), orphan manifests,
 * and temp build dirs whose building process is gone. A mounted image is safe to delete: running
 * sandboxes keep the inode until they unmount it.
 */
export async function pruneImages(dataDir: string, packsDir: string | PackSources = DEFAULT_PACKS_DIR): Promise<PruneResult> {
  const current = await currentHashes(packsDir);
  const result: PruneResult = { removed: [], freedBytes: 0 };
  const remove = async (path: string, tree = false) => {
    let size = 0;
    try {
      size = tree ? await treeBytes(path) : (await stat(path)).size;
    } catch {
      return;
    }
    if (tree) await removeTree(path);
    else await rm(path, { force: true });
    result.removed.push(path);
    result.freedBytes += size;
  };

  for (const file of await imageFiles(dataDir)) {
    const m = IMAGE_OR_MANIFEST.exec(file);
    if (!m) continue;
    if (current.get(m[1]!) === m[2]) continue;
    await remove(join(imagesDir(dataDir), file));
  }

  let tmpEntries: string[] = [];
  try {
    tmpEntries = await readdir(buildTmpRoot(dataDir));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  for (const entry of tmpEntries.filter((e) => e.startsWith(BUILD_DIR_PREFIX))) {
    const dir = join(buildTmpRoot(dataDir), entry);
    const pid = Number((await readFile(join(dir, 'owner.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 0 && isPidAlive(pid)) continue;
    await remove(dir, true);
  }
  return result;
}

/** Removes every image (and manifest) of pack `name`, whatever its hash; for a deleted custom pack. */
export async function removePackImages(dataDir: string, name: string): Promise<PruneResult> {
  const result: PruneResult = { removed: [], freedBytes: 0 };
  for (const file of await imageFiles(dataDir)) {
    const m = IMAGE_OR_MANIFEST.exec(file);
    if (m?.[1] !== name) continue;
    const path = join(imagesDir(dataDir), file);
    const size = await stat(path).then(
      (st) => st.size,
      () => 0,
    );
    await rm(path, { force: true });
    result.removed.push(path);
    result.freedBytes += size;
  }
  return result;
}

/** An image (.sqfs) or its manifest (.json): pack name and definition hash. */
const IMAGE_OR_MANIFEST = /^([a-z][a-z0-9-]*)-([0-9a-f]{16})\.(sqfs|json)$/;

/** The images folder's entries, sorted; none when it does not exist yet. */
async function imageFiles(dataDir: string): Promise<string[]> {
  try {
    return (await readdir(imagesDir(dataDir))).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
