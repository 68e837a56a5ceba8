/** What the core needs to know about language packs; the images module provides the data. */
export interface PackRunSpec {
  /** File name a snippet is written to, e.g. "main.py". */
  fileName: string;
  /** argv to run a file; "{file}" is replaced by its path. */
  command: string[];
  /** argv to run an uploaded project; "{entrypoint}" is replaced by the entrypoint path. */
  projectCommand: string[];
}

/** What a runner's agent starts as its zygote (agent/zygote_linux.go, agent/zygote.py). */
export interface ZygoteSpec {
  /** The interpreter (agent/zygote.py needs Python 3.9 or later). */
  argv: string[];
  /** The pack's environment: a run with it (and the pack's own command) is a warm run. */
  env: Record<string, string>;
  /** The pack's programs are not this interpreter: every run is an exec run. */
  execOnly?: boolean;
}

/**
 * The zygote of this pack's runners (runners.ts), or undefined when its runs cannot be forked.
 * A pack whose file runs as `python3 FILE` has warm runs (its file run in the warm interpreter)
 * and exec runs (any other command or environment); any other pack whose image has python3 has
 * exec runs only (its program executed in the run's own namespaces, without a sandbox start).
 */
export function zygoteOf(pack: Pick<PackInfo, 'run' | 'env'>, image: Pick<PackImage, 'tools'>): ZygoteSpec | undefined {
  const [interpreter, file, ...rest] = pack.run.command;
  if ((interpreter === 'python3' || interpreter === 'python') && file === '{file}' && rest.length === 0) return { argv: [interpreter], env: pack.env };
  return image.tools?.includes('python3') ? { argv: ['python3'], env: pack.env, execOnly: true } : undefined;
}

/** What a backend needs to know about a pack to start a sandbox from it. */
export interface PackImage {
  name: string;
  /** The pack's squashfs image. */
  imagePath: string;
  /** Content hash of the image definition; part of every cache/template key. */
  hash: string;
  env: Record<string, string>;
  /** How the pack runs a file; VM backends warm their templates with it (an empty file). */
  run?: Pick<PackRunSpec, 'fileName' | 'command'>;
  /** The common tools the image has (its manifest): a runner's zygote needs python3. */
  tools?: string[];
}

export interface PackInfo {
  name: string;
  description: string;
  env: Record<string, string>;
  run: PackRunSpec;
  /** Whether an image for the current definition is built on this host. */
  imageReady: boolean;
  imageHash?: string;
  imageSizeBytes?: number;
  /** builtin: from the repo (KILN_PACKS_DIR); custom: from the operator's folder (KILN_CUSTOM_PACKS_DIR). */
  source?: 'builtin' | 'custom';
  /** Custom packs: the pack it was made from, and its version (one more per changed definition). */
  base?: string;
  version?: number;
  /** The Debian packages the definition asks for (dependencies come with them). */
  packages?: string[];
  /** From the built image: its toolchain's version line, the versions of `packages`, and which common tools it has. */
  languageVersion?: string;
  packageVersions?: Record<string, string>;
  tools?: string[];
  imageBuiltAt?: string;
}

export interface PackCatalog {
  list(): Promise<PackInfo[]>;
  /** Re-reads the definitions (custom packs come and go while the service runs). */
  refresh(): Promise<void>;
  /** Throws UNKNOWN_PACK for a name that has no definition. */
  get(name: string): Promise<PackInfo>;
  /** Throws IMAGE_MISSING (with the command that builds it) when the image is not built. */
  image(name: string): Promise<PackImage>;
}

export function fillCommand(template: string[], vars: Record<string, string>): string[] {
  return template.map((arg) => arg.replace(/\{(\w+)\}/g, (m, k: string) => vars[k] ?? m));
}
