/**
 * Shapes shared by the pack image builder. A pack definition (images/packs/<name>.json) says what
 * goes into a root filesystem; only its `image` part decides the image bytes, so only that part is
 * hashed into the cache key.
 */

/** mmdebstrap variants we allow: both keep images small; `essential` has no apt in the result. */
export type ImageVariant = 'essential' | 'minbase';

export interface PackImageSpec {
  /** Debian suite, e.g. "bookworm". */
  suite: string;
  variant: ImageVariant;
  /** Debian packages on top of the variant and the builder's base packages. */
  packages: string[];
  /** Optional apt sources (mmdebstrap MIRROR arguments); empty = deb.debian.org + updates + security. */
  mirrors: string[];
  /** Files written into the image after the packages (custom packs); absent = none. */
  files?: PackFile[];
  /** Shell commands run as root in the image (with network) after the files; absent = none. */
  setup?: string[];
}

export interface PackFile {
  /** Absolute path inside the image. */
  path: string;
  /** Decoded bytes as utf8 or base64 text, as sent. */
  content: string;
  encoding: 'utf8' | 'base64';
  /** Octal permission bits, e.g. 0o644. */
  mode: number;
}

export interface PackRunSpec {
  /** File name a single-file submission is written as, e.g. "main.py". */
  fileName: string;
  /** argv for a single file; "{file}" is replaced by the file's path. */
  command: string[];
  /** argv for a project; "{entrypoint}" is replaced by the entrypoint's path. */
  projectCommand: string[];
}

export interface PackDefinition {
  name: string;
  description: string;
  image: PackImageSpec;
  env: Record<string, string>;
  run: PackRunSpec;
  versionCommand: string[];
  /** Custom packs only: the pack it was made from, and its version (1, 2, … one per changed definition). */
  base?: string;
  version?: number;
}

/** Where pack definitions come from: the repo's folder and the operator's folder of custom packs. */
export interface PackSources {
  builtinDir: string;
  /** Custom packs (POST /v1/packs writes here); absent = none. */
  customDir?: string;
}

export type BuildPhase = 'resolve' | 'download' | 'unpack' | 'configure' | 'setup' | 'squash' | 'done' | 'cached';

export interface BuildProgressEvent {
  pack: string;
  phase: BuildPhase;
  message: string;
  /** 0..100 within the phase, when the tool tells us enough to know. */
  percent?: number;
}

export interface BuildOptions {
  /** Root of kiln's state: images go to <dataDir>/images, the apt cache to <dataDir>/cache. */
  dataDir: string;
  /** Rebuild even when a complete image for the current hash exists. */
  force?: boolean;
  onProgress?: (event: BuildProgressEvent) => void;
  signal?: AbortSignal;
  /** Where the pack definitions live; defaults to the repo's images/packs (and no custom packs). */
  packsDir?: string | PackSources;
  /** Hard limit for the whole build; default 30 minutes. */
  timeoutMs?: number;
}

export interface BuildResult {
  name: string;
  hash: string;
  imagePath: string;
  manifestPath: string;
  sizeBytes: number;
  /** false = a complete image for this hash already existed (cache hit). */
  built: boolean;
  durationMs: number;
}

/** Written next to every image as <name>-<hash>.json. */
export interface ImageManifest {
  name: string;
  hash: string;
  builderVersion: string;
  builtAt: string;
  buildDurationMs: number;
  sizeBytes: number;
  /** Size of the unpacked root filesystem before compression. */
  rootfsBytes: number;
  /** Package name -> version, from the image's dpkg database. */
  packageVersions: Record<string, string>;
  /** First line of the pack's versionCommand, run in the image at build time. */
  versionText?: string;
  /** Which of the common tools (TOOL_NAMES) the image has on its PATH. */
  tools?: string[];
  definition: PackDefinition;
}

export interface ImageInfo {
  name: string;
  hash: string;
  imagePath: string;
  manifestPath: string;
  sizeBytes: number;
  builtAt: string;
  /** The hash matches the pack's current definition (false = stale or the pack was removed). */
  current: boolean;
}

/** What a backend needs to start a sandbox; structurally a core `PackImage` plus the run spec. */
export interface ResolvedImage {
  name: string;
  hash: string;
  imagePath: string;
  env: Record<string, string>;
  run: PackRunSpec;
  definition: PackDefinition;
  /** The common tools its manifest says it has (python3, node, git …). */
  tools?: string[];
}

export interface PruneResult {
  removed: string[];
  freedBytes: number;
}
