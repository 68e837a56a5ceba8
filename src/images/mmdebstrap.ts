/**
 * Builds a pack's root filesystem directory with mmdebstrap. The argument list is a pure function
 * so tests can check it without root or network.
 */
import { KilnError } from '../core/errors.js';
import { BASE_PACKAGES } from './hash.js';
import { MmdebstrapProgress } from './progress.js';
import { runProcess } from './process.js';
import type { BuildProgressEvent, PackImageSpec } from './types.js';

// Docs, man pages and translations are most of a minimal image and nobody reads them in a sandbox.
// Copyright files stay: they are tiny and the licences ask for them.
const DPKG_OPTIONS = [
  'path-exclude=/usr/share/doc/*',
  'path-include=/usr/share/doc/*/copyright',
  'path-exclude=/usr/share/man/*',
  'path-exclude=/usr/share/locale/*',
  'path-exclude=/usr/share/info/*',
  'path-exclude=/usr/share/lintian/*',
  // The image is squashed afterwards; fsync per file only slows dpkg down.
  'force-unsafe-io',
];

const MERGED_USR_HOOKS = '/usr/share/mmdebstrap/hooks/merged-usr';

export function shQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

export interface MmdebstrapArgsOptions {
  spec: PackImageSpec;
  rootDir: string;
  /** Shared .deb cache; hard-linked into the chroot before and back out after the install. */
  aptCacheDir: string;
}

export function mmdebstrapArgs(opts: MmdebstrapArgsOptions): string[] {
  const { spec, rootDir } = opts;
  const cache = shQuote(opts.aptCacheDir);
  const packages = [...new Set([...BASE_PACKAGES, ...spec.packages])].sort();
  return [
    '--verbose',
    '--mode=root',
    '--format=directory',
    `--variant=${spec.variant}`,
    `--include=${packages.join(',')}`,
    // bookworm's init-system-helpers would otherwise pull usrmerge and with it all of perl (~50 MB).
    `--hook-dir=${MERGED_USR_HOOKS}`,
    '--aptopt=Acquire::Languages "none"',
    ...DPKG_OPTIONS.map((o) => `--dpkgopt=${o}`),
    // Keep every downloaded .deb in the chroot's archive dir until the customize hook saved them.
    '--skip=essential/unlink',
    // Hard links: no copying, and apt skips any .deb already there with the right hash. Falls back
    // to a copy when dataDir spans file systems; a copy never writes into an existing (shared) inode.
    `--setup-hook=mkdir -p "$1/var/cache/apt/archives" && { cp -al ${cache}/. "$1/var/cache/apt/archives/" 2>/dev/null || cp -a ${cache}/. "$1/var/cache/apt/archives/"; }`,
    `--customize-hook=for f in "$1"/var/cache/apt/archives/*.deb; do [ -e "$f" ] || continue; n=${cache}/"\${f##*/}"; [ -e "$n" ] || ln "$f" "$n" 2>/dev/null || { cp "$f" "$n.tmp$$" && mv -f "$n.tmp$$" "$n"; }; done`,
    spec.suite,
    rootDir,
    ...spec.mirrors,
  ];
}

export interface BootstrapOptions extends MmdebstrapArgsOptions {
  pack: string;
  signal?: AbortSignal;
  timeoutMs: number;
  onProgress?: (event: BuildProgressEvent) => void;
}

/**
 * Runs mmdebstrap inside a private mount namespace (unshare --mount): whatever it mounts into the
 * chroot disappears with it, even when it is killed before it can unmount.
 */
export async function bootstrapRootfs(opts: BootstrapOptions): Promise<void> {
  const progress = new MmdebstrapProgress(opts.pack);
  const args = ['--mount', '--propagation', 'private', 'mmdebstrap', ...mmdebstrapArgs(opts)];
  const result = await runProcess('unshare', args, {
    signal: opts.signal,
    timeoutMs: opts.timeoutMs,
    env: { ...process.env, LC_ALL: 'C.UTF-8', DEBIAN_FRONTEND: 'noninteractive' },
    tailLines: 30,
    onLine: (line) => {
      const event = progress.feed(line);
      if (event) opts.onProgress?.(event);
    },
  });
  if (result.exitCode !== 0) {
    const errors = result.tail.filter((l) => /^E: /.test(l));
    const shown = (errors.length > 0 ? errors : result.tail.slice(-10)).join('\n  ');
    throw new KilnError('INTERNAL', `mmdebstrap failed for pack ${opts.pack} (exit ${result.exitCode}):\n  ${shown}`, {
      details: { pack: opts.pack },
    });
  }
}
