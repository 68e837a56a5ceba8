/**
 * Builds a pack's root filesystem directory with mmdebstrap. The argument list is a pure function
 * so tests can check it without root or network.
 */
import { KilnError } from '../core/errors.js';
import { BASE_PACKAGES } from './hash.js';
import { runProcess } from './process.js';
import { MmdebstrapProgress } from './progress.js';
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
  /** Where spec.files[i]'s bytes were written as file `i` (see stageFiles); needed when there are files. */
  filesDir?: string;
}

// What setup commands see: root in the image, a plain PATH, no host variables.
const SETUP_ENV = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'LC_ALL=C.UTF-8', 'DEBIAN_FRONTEND=noninteractive'];

/**
 * Hooks for a custom pack's files and setup commands, run after the packages are installed. Both go
 * through chroot, so paths (and any absolute symlink on them) resolve inside the image, never on the
 * host. Each step prints a "kiln:" line first: that is how progress and errors name the step.
 */
export function customHooks(spec: PackImageSpec, filesDir: string | undefined): string[] {
  const hooks: string[] = [];
  const files = spec.files ?? [];
  if (files.length > 0) {
    if (!filesDir) throw new Error('files need a staging dir');
    const steps = files.map((f, i) => {
      const write = `mkdir -p "$(dirname "$0")" && cat > "$0" && chmod ${f.mode.toString(8)} "$0"`;
      return `chroot "$1" /bin/sh -c ${shQuote(write)} ${shQuote(f.path)} < ${shQuote(`${filesDir}/${i}`)}`;
    });
    hooks.push(`echo ${shQuote(`kiln: writing ${files.length} file(s)`)} && ${steps.join(' && ')}`);
  }
  const setup = spec.setup ?? [];
  setup.forEach((cmd, i) => {
    const label = `setup ${i + 1}/${setup.length}`;
    hooks.push(
      `echo ${shQuote(`kiln: ${label}: ${cmd.split('\n')[0]!.slice(0, 200)}`)} && chroot "$1" /usr/bin/env -i ${SETUP_ENV.join(' ')} /bin/sh -ec ${shQuote(cmd)} 2>&1 || { rc=$?; echo "kiln: ${label} failed with exit $rc"; exit $rc; }`,
    );
  });
  // What files and setup put under /workspace belongs to the sandbox user, as /workspace itself does.
  if (files.length > 0 || setup.length > 0) hooks.push('chroot "$1" /bin/sh -c \'[ ! -d /workspace ] || chown -R 1000:1000 /workspace\'');
  return hooks.map((h) => `--customize-hook=${h}`);
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
    ...customHooks(spec, opts.filesDir),
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
    // Enough to hold a failed setup command's last lines as well as apt's E: lines.
    tailLines: 60,
    onLine: (line) => {
      const event = progress.feed(line);
      if (event) opts.onProgress?.(event);
    },
  });
  if (result.exitCode !== 0) throw bootstrapError(opts.pack, opts.spec.suite, result.exitCode, result.tail);
}

/**
 * The error for a failed mmdebstrap run. What the definition got wrong (a package apt cannot find, a
 * setup command that failed) is PACK_BUILD_FAILED naming it; anything else is the host's problem.
 */
export function bootstrapError(pack: string, suite: string, exitCode: number, tail: string[]): KilnError {
  const missing = tail.map((l) => /^E: (?:Unable to locate package (\S+)|Package '([^']+)' has no installation candidate|Version '[^']+' for '([^']+)' was not found)/.exec(l)).find((m) => m !== null);
  if (missing) {
    const name = missing[1] ?? missing[2] ?? missing[3]!;
    return new KilnError('PACK_BUILD_FAILED', `Debian package "${name}" does not exist in ${suite} (or has no installable version); check the name at https://packages.debian.org/${suite}/${name}`, {
      details: { pack, package: name },
    });
  }
  const failedStep = tail.find((l) => /^kiln: setup \d+\/\d+ failed/.test(l));
  if (failedStep) {
    const step = /^kiln: (setup \d+\/\d+)/.exec(failedStep)![1]!;
    const started = tail.findIndex((l) => l.startsWith(`kiln: ${step}:`));
    const output = tail.slice(started + 1, tail.indexOf(failedStep)).slice(-10);
    return new KilnError(
      'PACK_BUILD_FAILED',
      `${failedStep.slice('kiln: '.length)}${started >= 0 ? ` (${tail[started]!.slice(`kiln: ${step}: `.length)})` : ''}; its last output:\n  ${output.join('\n  ')}`,
      {
        details: { pack, step },
      },
    );
  }
  const errors = tail.filter((l) => /^E: /.test(l));
  const shown = (errors.length > 0 ? errors : tail.slice(-10)).join('\n  ');
  return new KilnError('INTERNAL', `mmdebstrap failed for pack ${pack} (exit ${exitCode}):\n  ${shown}`, { details: { pack } });
}
