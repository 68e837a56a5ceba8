/**
 * The core's PackCatalog over the images module. Definitions are cached, and re-read whenever the
 * list is asked for, a name is not found, or a custom pack is added or removed: custom packs come and
 * go while the service runs (POST /v1/packs, or an operator editing KILN_CUSTOM_PACKS_DIR).
 */
import type { PackImage } from '../core/backend.js';
import { KilnError } from '../core/errors.js';
import type { PackCatalog, PackInfo } from '../core/packs.js';
import { findComplete, type ImageManifest, imageHash, loadPacks, type PackDefinition, type PackSources, packNames, resolveImage } from '../images/index.js';

export async function createPackCatalog(dataDir: string, sources: PackSources, log: (msg: string, fields?: Record<string, unknown>) => void = () => undefined): Promise<PackCatalog> {
  let defs = new Map<string, PackDefinition>();
  let custom = new Set<string>();
  // Keyed by name and hash: a custom pack's new version has a new image.
  const resolved = new Map<string, PackImage>();
  const invalidSeen = new Set<string>();

  const refresh = async (): Promise<void> => {
    const onInvalid = (name: string, e: unknown) => {
      const message = e instanceof Error ? e.message : String(e);
      // Logged once per distinct problem, not on every listing.
      if (!invalidSeen.has(message)) log('custom pack skipped: its definition is invalid', { pack: name, error: message });
      invalidSeen.add(message);
    };
    const [loaded, names] = await Promise.all([loadPacks(sources, onInvalid), packNames(sources)]);
    defs = new Map(loaded.map((d) => [d.name, d]));
    custom = new Set(names.custom);
  };

  const definition = async (name: string): Promise<PackDefinition> => {
    if (!defs.has(name)) await refresh();
    const d = defs.get(name);
    if (!d) throw new KilnError('UNKNOWN_PACK', `unknown pack "${name}"; available packs: ${[...defs.keys()].join(', ')} (GET /v1/packs)`);
    return d;
  };

  const info = (d: PackDefinition, manifest: ImageManifest | undefined, sizeBytes: number | undefined): PackInfo => ({
    name: d.name,
    description: d.description,
    env: d.env,
    run: d.run,
    imageReady: manifest !== undefined,
    imageHash: imageHash(d.image),
    imageSizeBytes: sizeBytes,
    source: custom.has(d.name) ? 'custom' : 'builtin',
    ...(d.base ? { base: d.base, version: d.version ?? 1 } : {}),
    packages: d.image.packages,
    ...(manifest ? facts(d, manifest) : {}),
  });

  await refresh();
  return {
    refresh,
    async list(): Promise<PackInfo[]> {
      await refresh();
      return Promise.all(
        [...defs.values()].map(async (d) => {
          const found = await findComplete(dataDir, d.name, imageHash(d.image));
          return info(d, found?.manifest, found?.sizeBytes);
        }),
      );
    },
    async get(name: string): Promise<PackInfo> {
      const d = await definition(name);
      const img = resolved.get(`${name}@${imageHash(d.image)}`);
      // The hot path (every create) reads no manifest; imageReady is what this process has resolved.
      return { ...info(d, undefined, undefined), imageReady: img !== undefined };
    },
    async image(name: string): Promise<PackImage> {
      const d = await definition(name);
      const key = `${name}@${imageHash(d.image)}`;
      // Resolved once per hash: the image for a hash never changes once complete.
      let img = resolved.get(key);
      if (!img) {
        const r = await resolveImage(name, dataDir, sources);
        img = { name: r.name, hash: r.hash, imagePath: r.imagePath, env: r.env, run: r.run, tools: r.tools };
        resolved.set(key, img);
      }
      return img;
    },
  };
}

/** What the image's manifest says it contains, in the words GET /v1/packs uses. */
function facts(d: PackDefinition, m: ImageManifest): Partial<PackInfo> {
  const versions = Object.fromEntries(
    d.image.packages
      .map((p) => p.split(/[:=]/)[0]!)
      .filter((p) => m.packageVersions[p])
      .map((p) => [p, m.packageVersions[p]!]),
  );
  return {
    ...(m.versionText ? { languageVersion: m.versionText } : {}),
    packageVersions: versions,
    ...(m.tools ? { tools: m.tools } : {}),
    imageBuiltAt: m.builtAt,
  };
}
