/**
 * Builds (once, cached by content hash) the guest kernel and initramfs every microVM boots:
 * `<dataDir>/vm/<hash>/vmlinux` and `<dataDir>/vm/<hash>/initrd.cpio`. VMM-neutral: QEMU and
 * Firecracker boot the same pair. The initramfs holds the static kiln-agent as /init plus the
 * modules it loads (listed in load order in /kiln/modules.order).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { KilnError } from '../core/errors.js';
import { buildCpio, type CpioEntry } from './cpio.js';
import { extractVmlinux, findHostKernel, type HostKernel } from './kernel.js';
import { loadModuleBytes, modulesOrder, resolveModules } from './modules.js';

/** Bump when the initramfs layout or the build steps change: it is part of the cache key. */
const FORMAT_VERSION = 'kiln-vm-3';
/** Older kernel + initramfs builds kept (VMs started from them may still be running). */
const KEEP_BUILDS = 4;
const STALE_TMP_MS = 3600_000;

export interface BuildVmArtifactsOptions {
  /** The service's persistent data directory; artifacts go to `<dataDir>/vm/`. */
  dataDir: string;
  /** The static kiln-agent binary that becomes /init. */
  agentPath: string;
  /** Defaults to the newest kernel in /boot with modules in /lib/modules. */
  kernel?: HostKernel;
  signal?: AbortSignal;
  onProgress?: (message: string) => void;
}

export interface VmArtifacts {
  vmlinuxPath: string;
  /**
   * The compressed kernel as shipped (a copy, immutable like the rest of the build): booted through
   * its decompressor, which places the kernel at a random address (KASLR). The ELF `vmlinux`
   * boots faster but always at the same address.
   */
  bzImagePath: string;
  initrdPath: string;
  kernelVersion: string;
  /** Content hash of kernel + modules + agent + layout; part of every template key. */
  hash: string;
  /** Module names in load order, as the guest loads them. */
  modules: string[];
}

export async function buildVmArtifacts(options: BuildVmArtifactsOptions): Promise<VmArtifacts> {
  const { dataDir, agentPath, signal } = options;
  const progress = options.onProgress ?? (() => undefined);
  const kernel = options.kernel ?? (await findHostKernel());
  const agent = await readFile(agentPath).catch((e: unknown) => {
    throw new KilnError('IMAGE_MISSING', `the kiln-agent binary ${agentPath} is missing: build it with "bash agent/build.sh"`, { cause: e });
  });
  const modules = await resolveModules(kernel.modulesDir);
  const moduleBytes = await Promise.all(modules.map((m) => loadModuleBytes(m.sourcePath)));
  const bzImage = await readFile(kernel.bzImagePath);
  signal?.throwIfAborted();

  const h = createHash('sha256').update(FORMAT_VERSION).update('\0kernel\0').update(sha256(bzImage)).update('\0agent\0').update(sha256(agent));
  for (const [i, m] of modules.entries()) h.update(`\0${m.name}\0`).update(sha256(moduleBytes[i]!));
  const hash = h.digest('hex').slice(0, 24);

  const dir = `${dataDir}/vm/${hash}`;
  const result: VmArtifacts = {
    vmlinuxPath: `${dir}/vmlinux`,
    bzImagePath: `${dir}/bzImage`,
    initrdPath: `${dir}/initrd.cpio`,
    kernelVersion: kernel.version,
    hash,
    modules: modules.map((m) => m.name),
  };
  if (await exists(`${dir}/complete`)) return result;

  progress(`building guest kernel and initramfs for ${kernel.version} (${hash})`);
  const tmp = `${dataDir}/vm/.tmp-${hash}-${randomBytes(4).toString('hex')}`;
  await mkdir(tmp, { recursive: true });
  try {
    progress(`extracting vmlinux from ${kernel.bzImagePath}`);
    await extractVmlinux(kernel.bzImagePath, `${tmp}/vmlinux`, signal);
    await writeFile(`${tmp}/bzImage`, bzImage);
    signal?.throwIfAborted();
    const entries: CpioEntry[] = [
      { kind: 'dir', path: 'dev' },
      { kind: 'char', path: 'dev/console', major: 5, minor: 1 },
      { kind: 'char', path: 'dev/null', major: 1, minor: 3, mode: 0o666 },
      { kind: 'dir', path: 'proc' },
      { kind: 'dir', path: 'sys' },
      { kind: 'dir', path: 'newroot' },
      { kind: 'dir', path: 'kiln' },
      { kind: 'dir', path: 'kiln/modules' },
      ...modules.map((m, i): CpioEntry => ({ kind: 'file', path: `kiln/modules/${m.fileName}`, data: moduleBytes[i]! })),
      { kind: 'file', path: 'kiln/modules.order', data: Buffer.from(modulesOrder(modules)) },
      { kind: 'file', path: 'init', mode: 0o755, data: agent },
    ];
    progress(`writing initramfs (${modules.length} modules)`);
    await writeFile(`${tmp}/initrd.cpio`, buildCpio(entries));
    await writeFile(`${tmp}/complete`, `${JSON.stringify({ kernelVersion: kernel.version, modules: result.modules })}\n`);
    await rename(tmp, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another builder won the race with identical content: keep theirs.
      if (e.code !== 'ENOTEMPTY' && e.code !== 'EEXIST') throw e;
      await rm(tmp, { recursive: true, force: true });
    });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  await prune(`${dataDir}/vm`, hash).catch(() => undefined);
  return result;
}

/** Every agent rebuild makes a new ~55 MB pair: keep the newest few, drop abandoned temp dirs. */
async function prune(vmDir: string, keepHash: string): Promise<void> {
  const entries = await Promise.all((await readdir(vmDir)).map(async (name) => ({ name, mtimeMs: (await stat(`${vmDir}/${name}`)).mtimeMs })));
  const now = Date.now();
  const builds = entries.filter((e) => !e.name.startsWith('.')).sort((a, b) => b.mtimeMs - a.mtimeMs);
  const stale = [...entries.filter((e) => e.name.startsWith('.tmp-') && now - e.mtimeMs > STALE_TMP_MS), ...builds.slice(KEEP_BUILDS).filter((e) => e.name !== keepHash)];
  await Promise.all(stale.map((e) => rm(`${vmDir}/${e.name}`, { recursive: true, force: true })));
}

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
