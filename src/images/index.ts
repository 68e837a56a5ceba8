/** Pack image builder: the one entry point the CLI, server and backends import. */
export { buildDefinition, buildPack } from './build.js';
export { PackDefinitionError } from './checker.js';
export { CUSTOM_LIMITS, type CustomPackSpec, resolveCustomPack, validateCustomPack } from './custom.js';
export { DEFAULT_PACKS_DIR, loadPack, loadPacks, packNames, packSources, validatePack } from './definition.js';
export { TOOL_NAMES } from './facts.js';
export { BASE_PACKAGES, BUILDER_VERSION, canonicalJson, imageHash } from './hash.js';
export { aptCacheDir, imagePaths, imagesDir } from './paths.js';
export { findComplete, listImages, pruneImages, readManifest, removePackImages, resolveImage } from './store.js';
export type {
  BuildOptions,
  BuildPhase,
  BuildProgressEvent,
  BuildResult,
  ImageInfo,
  ImageManifest,
  PackDefinition,
  PackFile,
  PackImageSpec,
  PackRunSpec,
  PackSources,
  PruneResult,
  ResolvedImage,
} from './types.js';
