/** The core's PackCatalog over the images module: definitions read once, images resolved lazily. */
import type { PackImage } from '../core/backend.js';
import { KilnError } from '../core/errors.js';
import type { PackCatalog, PackInfo } from '../core/packs.js';
import { imageHash, listImages, loadPacks, resolveImage } from '../images/index.js';
import type { PackDefinition } from '../images/types.js';

export async function createPackCatalog(dataDir: string, packsDir: string): Promise<PackCatalog> {
  const defs = new Map((await loadPacks(packsDir)).map((d) => [d.name, d]));
  const resolved = new Map<string, PackImage>();

  const definition = (name: string): PackDefinition => {
    const d = defs.get(name);
    if (!d) throw new KilnError('UNKNOWN_PACK', `unknown pack "${name}"; available packs: ${[...defs.keys()].join(', ')} (GET /v1/packs)`);
    return d;
  };

  return {
    async list(): Promise<PackInfo[]> {
      const images = await listImages(dataDir, packsDir);
      return [...defs.values()].map((d) => {
        const hash = imageHash(d.image);
        const img = images.find((i) => i.name === d.name && i.hash === hash);
        return {
          name: d.name, description: d.description, env: d.env, run: d.run,
          imageReady: img !== undefined, imageHash: hash, imageSizeBytes: img?.sizeBytes,
        };
      });
    },
    async get(name: string): Promise<PackInfo> {
      const d = definition(name);
      return { name: d.name, description: d.description, env: d.env, run: d.run, imageReady: resolved.has(name), imageHash: imageHash(d.image) };
    },
    async image(name: string): Promise<PackImage> {
      definition(name);
      // Resolved once per process: the image for a hash never changes once complete.
      let img = resolved.get(name);
      if (!img) {
        const r = await resolveImage(name, dataDir, packsDir);
        img = { name: r.name, hash: r.hash, imagePath: r.imagePath, env: r.env, run: r.run };
        resolved.set(name, img);
      }
      return img;
    },
  };
}
