/** Pack image builder: the one entry point the CLI, server and backends import. */
export { buildPack } from './build.js';
export { DEFAULT_PACKS_DIR, loadPack, loadPacks, validatePack, PackDefinitionError } from './definition.js';
export { BASE_PACKAGES, BUILDER_VERSION, canonicalJson, imageHash } from './hash.js';
export { aptCacheDir, imagePaths, imagesDir } from './paths.js';
export { listImages, pruneImages, resolveImage } from './store.js';
export type {
  BuildOptions, BuildPhase, BuildProgressEvent, BuildResult, ImageInfo, ImageManifest, PackDefinition,
  PackImageSpec, PackRunSpec, PruneResult, ResolvedImage,
} from './types.js';
