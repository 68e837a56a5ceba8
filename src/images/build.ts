/**
 * buildPack: definition -> <dataDir>/images/<name>-<hash>.sqfs, as a list of steps over one temp
 * dir. Every path out (success, failure, abort, timeout) removes the temp dir; the image appears
 * only by a final rename after fsync, so a crash never leaves a complete-looking half image.
 */
import { mkdir, mkdtemp, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CleanupStack } from '../core/cleanup.js';
import { KilnError } from '../core/errors.js';
import { customiseRootfs, packageVersions, treeBytes } from './customise.js';
import { DEFAULT_PACKS_DIR, loadPack } from './definition.js';
import { toolsIn, versionIn } from './facts.js';
import { durableRename, removeTree } from './fsutil.js';
import { BUILDER_VERSION, imageHash } from './hash.js';
import { bootstrapRootfs } from './mmdebstrap.js';
import { aptCacheDir, BUILD_DIR_PREFIX, buildTmpRoot, imagePaths, imagesDir } from './paths.js';
import { squashRootfs } from './squash.js';
import { findComplete } from './store.js';
import type { BuildOptions, BuildProgressEvent, BuildResult, ImageManifest, PackDefinition } from './types.js';

const DEFAULT_BUILD_TIMEOUT_MS = 30 * 60_000;

export async function buildPack(name: string, opts: BuildOptions): Promise<BuildResult> {
  return buildDefinition(await loadPack(name, opts.packsDir ?? DEFAULT_PACKS_DIR), opts);
}

/** Builds a definition that is already loaded (a custom pack is built before its file is stored). */
export async function buildDefinition(definition: PackDefinition, opts: BuildOptions): Promise<BuildResult> {
  const name = definition.name;
  const startedAt = Date.now();
  const deadline = startedAt + (opts.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS);
  const remainingMs = () => {
    const left = deadline - Date.now();
    if (left <= 0) throw new KilnError('TIMEOUT', `building pack ${name} took longer than ${opts.timeoutMs ?? DEFAULT_BUILD_TIMEOUT_MS}ms`);
    return left;
  };
  const emit = (event: Omit<BuildProgressEvent, 'pack'>) => opts.onProgress?.({ pack: name, ...event });

  const hash = imageHash(definition.image);
  const paths = imagePaths(opts.dataDir, name, hash);
  opts.signal?.throwIfAborted();

  if (!opts.force) {
    const found = await findComplete(opts.dataDir, name, hash);
    if (found) {
      emit({ phase: 'cached', message: `image ${hash} is up to date`, percent: 100 });
      return { name, hash, ...paths, sizeBytes: found.sizeBytes, built: false, durationMs: Date.now() - startedAt };
    }
  }

  const cleanup = new CleanupStack();
  try {
    await mkdir(imagesDir(opts.dataDir), { recursive: true });
    await mkdir(aptCacheDir(opts.dataDir), { recursive: true });
    await mkdir(buildTmpRoot(opts.dataDir), { recursive: true });
    const tmp = await mkdtemp(join(buildTmpRoot(opts.dataDir), `${BUILD_DIR_PREFIX}${name}-`));
    cleanup.push(`remove ${tmp}`, () => removeTree(tmp));
    // Lets `images prune` tell a crashed build's leftovers from a running build.
    await writeFile(join(tmp, 'owner.pid'), `${process.pid}\n`);
    const rootDir = join(tmp, 'root');
    const filesDir = await stageFiles(tmp, definition);

    emit({ phase: 'resolve', message: `building ${definition.image.suite} root filesystem (hash ${hash})` });
    await bootstrapRootfs({
      pack: name,
      spec: definition.image,
      rootDir,
      aptCacheDir: aptCacheDir(opts.dataDir),
      filesDir,
      signal: opts.signal,
      timeoutMs: remainingMs(),
      onProgress: opts.onProgress,
    });
    opts.signal?.throwIfAborted();

    emit({ phase: 'configure', message: 'adding the sandbox user and /workspace, removing caches' });
    await customiseRootfs(rootDir);
    const packageVersionsMap = await packageVersions(rootDir, opts.signal);
    const rootfsBytes = await treeBytes(rootDir);
    const tools = await toolsIn(rootDir);
    const versionText = await versionIn(rootDir, definition, opts.signal);

    emit({ phase: 'squash', message: `compressing ${(rootfsBytes / 1e6).toFixed(0)} MB with zstd`, percent: 0 });
    const tmpImage = join(tmp, 'image.sqfs');
    await squashRootfs({ pack: name, rootDir, outPath: tmpImage, signal: opts.signal, timeoutMs: remainingMs(), onProgress: opts.onProgress });
    opts.signal?.throwIfAborted();

    const sizeBytes = (await stat(tmpImage)).size;
    const durationMs = Date.now() - startedAt;
    const manifest = makeManifest(definition, hash, { sizeBytes, rootfsBytes, durationMs, packageVersions: packageVersionsMap, tools, versionText });
    const tmpManifest = join(tmp, 'manifest.json');
    await writeFile(tmpManifest, `${JSON.stringify(manifest, null, 2)}\n`);
    // Manifest first, image last: the .sqfs is the "complete" marker findComplete looks for.
    await durableRename(tmpManifest, paths.manifestPath);
    await durableRename(tmpImage, paths.imagePath);

    emit({ phase: 'done', message: `${(sizeBytes / 1e6).toFixed(1)} MB in ${(durationMs / 1000).toFixed(1)}s`, percent: 100 });
    return { name, hash, ...paths, sizeBytes, built: true, durationMs };
  } finally {
    await cleanup.run();
  }
}

/** Writes each of a custom pack's files as <tmp>/files/<index>, for the hooks to copy in; undefined when it has none. */
async function stageFiles(tmp: string, definition: PackDefinition): Promise<string | undefined> {
  const files = definition.image.files ?? [];
  if (files.length === 0) return undefined;
  const dir = join(tmp, 'files');
  await mkdir(dir, { mode: 0o700 });
  await Promise.all(files.map((f, i) => writeFile(join(dir, String(i)), Buffer.from(f.content, f.encoding), { mode: 0o600 })));
  return dir;
}

interface ManifestFacts {
  sizeBytes: number;
  rootfsBytes: number;
  durationMs: number;
  packageVersions: Record<string, string>;
  tools: string[];
  versionText?: string;
}

function makeManifest(definition: PackDefinition, hash: string, facts: ManifestFacts): ImageManifest {
  return {
    name: definition.name,
    hash,
    builderVersion: BUILDER_VERSION,
    builtAt: new Date().toISOString(),
    buildDurationMs: facts.durationMs,
    sizeBytes: facts.sizeBytes,
    rootfsBytes: facts.rootfsBytes,
    packageVersions: facts.packageVersions,
    versionText: facts.versionText,
    tools: facts.tools,
    definition,
  };
}
