/**
 * `kiln firecracker install`: download a pinned Firecracker release tarball, verify its sha256
 * against a pinned (or explicitly given) value BEFORE anything is unpacked, then install
 * `firecracker` and `jailer` atomically (temp file in the target dir + rename). Offline, on a hash
 * mismatch or on any error nothing half-installed remains.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { KilnError } from '../../core/errors.js';

export const DEFAULT_VERSION = 'v1.10.1';

/**
 * sha256 of the release tarballs. v1.10.1: the value published with the release
 * (firecracker-v1.10.1-x86_64.tgz.sha256.txt) as recorded independently by several packagers
 * (Yocto meta-virtualization recipe, an AUR PKGBUILD, vendored-asset manifests); it could not be
 * fetched from GitHub from the build machine. Other versions need an explicit --sha256.
 */
export const PINNED_RELEASES: Record<string, Partial<Record<'x86_64' | 'aarch64', string>>> = {
  'v1.10.1': {
    x86_64: '36112969952b0e34fadcfca769d48a55dc22cbba99af17e02bd0e24fc35adc77',
    aarch64: '9e3641071de140979afaac0c52fdc107baeba398bdb5709c12f77ee469207fcd',
  },
};

const MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024;

export interface InstallOptions {
  version?: string;
  /** Target directory for `firecracker` and `jailer` (default /usr/local/bin). */
  dir?: string;
  /** Overrides (or supplies, for unpinned versions) the expected sha256 of the tarball. */
  sha256?: string;
  /** Mirror or local URL of the tarball; default: the GitHub release. */
  url?: string;
  arch?: 'x86_64' | 'aarch64';
  timeoutMs?: number;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

export interface InstallResult {
  firecrackerPath: string;
  jailerPath?: string;
  version: string;
  sha256: string;
}

export function releaseUrl(version: string, arch: string): string {
  return `https://github.com/firecracker-microvm/firecracker/releases/download/${version}/firecracker-${version}-${arch}.tgz`;
}

export function hostArch(): 'x86_64' | 'aarch64' {
  if (process.arch === 'x64') return 'x86_64';
  if (process.arch === 'arm64') return 'aarch64';
  throw new KilnError('BACKEND_UNAVAILABLE', `Firecracker has no release for ${process.arch}; it runs on x86_64 and aarch64 only`);
}

export async function installFirecracker(o: InstallOptions = {}): Promise<InstallResult> {
  const version = normaliseVersion(o.version ?? DEFAULT_VERSION);
  const arch = o.arch ?? hostArch();
  const expected = (o.sha256 ?? PINNED_RELEASES[version]?.[arch])?.toLowerCase();
  if (!expected) {
    throw new KilnError(
      'INVALID_REQUEST',
      `no pinned sha256 for Firecracker ${version} (${arch}); pass --sha256 <value from firecracker-${version}-${arch}.tgz.sha256.txt on the release page>, or use ${DEFAULT_VERSION}`,
    );
  }
  if (!/^[0-9a-f]{64}$/.test(expected)) throw new KilnError('INVALID_REQUEST', `--sha256 must be 64 hex digits, got "${expected}"`);
  const dir = o.dir ?? '/usr/local/bin';
  const url = o.url ?? releaseUrl(version, arch);
  const progress = o.onProgress ?? (() => undefined);
  await mkdir(dir, { recursive: true });
  const tag = randomBytes(4).toString('hex');
  const tarball = join(dir, `.kiln-firecracker-${tag}.tgz.part`);
  const staged = { firecracker: join(dir, `.firecracker.${tag}.tmp`), jailer: join(dir, `.jailer.${tag}.tmp`) };
  try {
    progress(`downloading ${url}`);
    const actual = await download(url, tarball, o);
    if (actual !== expected) {
      throw new KilnError('INVALID_REQUEST', `sha256 mismatch for ${url}: expected ${expected}, got ${actual}. Nothing was installed; the download may be corrupt or tampered with`);
    }
    progress(`sha256 verified (${actual})`);
    const found = await extract(tarball, version, arch, staged);
    if (!found.firecracker) throw new KilnError('INVALID_REQUEST', `the tarball has no release-${version}-${arch}/firecracker-${version}-${arch}; nothing was installed`);
    const result: InstallResult = { firecrackerPath: join(dir, 'firecracker'), version, sha256: actual };
    if (found.jailer) {
      await rename(staged.jailer, join(dir, 'jailer'));
      result.jailerPath = join(dir, 'jailer');
    }
    await rename(staged.firecracker, result.firecrackerPath);
    progress(`installed ${result.firecrackerPath}${result.jailerPath ? ` and ${result.jailerPath}` : ''}`);
    return result;
  } finally {
    await Promise.all([tarball, staged.firecracker, staged.jailer].map((p) => rm(p, { force: true })));
  }
}

function normaliseVersion(v: string): string {
  const s = v.startsWith('v') ? v : `v${v}`;
  if (!/^v\d+\.\d+\.\d+$/.test(s)) throw new KilnError('INVALID_REQUEST', `--version ${v}: use a release like ${DEFAULT_VERSION}`);
  return s;
}

/** Streams the URL to `file`, hashing on the way; returns the hex sha256. */
async function download(url: string, file: string, o: InstallOptions): Promise<string> {
  const timer = AbortSignal.timeout(o.timeoutMs ?? 300_000);
  const signal = o.signal ? AbortSignal.any([o.signal, timer]) : timer;
  const hash = createHash('sha256');
  let bytes = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      bytes += chunk.length;
      if (bytes > MAX_DOWNLOAD_BYTES) return cb(new KilnError('INVALID_REQUEST', `download of ${url} exceeds ${MAX_DOWNLOAD_BYTES} bytes; not a Firecracker release`));
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  if (url.startsWith('file://') || url.startsWith('/')) {
    const path = url.startsWith('file://') ? fileURLToPath(url) : url;
    await pipeline(createReadStream(path), meter, createWriteStream(file, { mode: 0o600 }), { signal }).catch((e: NodeJS.ErrnoException) => {
      throw new KilnError('INVALID_REQUEST', `cannot read ${path}: ${e.code ?? e.message}; nothing was installed`, { cause: e });
    });
    return hash.digest('hex');
  }
  let res: Response;
  try {
    res = await fetch(url, { signal, redirect: 'follow' });
  } catch (e) {
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (e as Error).message;
    throw new KilnError(
      'BACKEND_UNAVAILABLE',
      `cannot download ${url} (${why}): this host seems offline or cannot reach GitHub. Download the tarball elsewhere and pass --url file:///path/to.tgz or a reachable mirror; nothing was installed`,
      { cause: e },
    );
  }
  if (!res.ok || !res.body) throw new KilnError('BACKEND_UNAVAILABLE', `download of ${url} failed: HTTP ${res.status}; nothing was installed`);
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), meter, createWriteStream(file, { mode: 0o600 }), { signal });
  return hash.digest('hex');
}

async function extract(tarball: string, version: string, arch: string, staged: { firecracker: string; jailer: string }): Promise<{ firecracker: boolean; jailer: boolean }> {
  const wanted = new Map([
    [`release-${version}-${arch}/firecracker-${version}-${arch}`, 'firecracker' as const],
    [`release-${version}-${arch}/jailer-${version}-${arch}`, 'jailer' as const],
  ]);
  const found = { firecracker: false, jailer: false };
  const ex = tar.extract();
  const reading = pipeline(createReadStream(tarball), createGunzip(), ex);
  for await (const entry of ex) {
    const which = wanted.get(entry.header.name.replace(/^\.\//, ''));
    if (which && entry.header.type === 'file') {
      await pipeline(entry, createWriteStream(staged[which], { mode: 0o755 }));
      await chmod(staged[which], 0o755);
      found[which] = true;
    } else {
      entry.resume();
    }
  }
  await reading;
  return found;
}
