/**
 * Picks the kernel modules the guest needs out of /lib/modules/<version>, in load order, with
 * their dependencies, decompressed and with the appended signature stripped (the guest does not
 * enforce signatures, and skipping the check saves boot time).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { KilnError } from '../core/errors.js';

const execFileAsync = promisify(execFile);

/** virtio device IDs (virtio spec 5): a driver module is loaded only when its device is there. */
export const VIRTIO_DEVICE = { net: 1, block: 2, console: 3, entropy: 4, vsock: 19 } as const;

export interface WantedModule {
  name: string;
  required: boolean;
  /** Load only when the VM has a virtio device of this ID (each VMM offers a different set). */
  virtioDevice?: number;
}

/**
 * What every guest needs, VMM-neutral: virtio over MMIO (QEMU microvm and Firecracker), the root
 * disk, the QEMU control port, the NIC, an entropy source, the root filesystem layers, and vsock for
 * Firecracker's control channel. `required: false` entries are skipped when the kernel lacks them.
 * Device-specific ones are skipped at boot when the VMM does not offer the device (QEMU has no
 * vsock here, Firecracker no console port): a module load costs tens of ms under emulation.
 */
export const GUEST_MODULES: ReadonlyArray<WantedModule> = [
  { name: 'virtio_ring', required: true },
  { name: 'virtio', required: true },
  { name: 'virtio_mmio', required: true },
  { name: 'virtio_blk', required: true, virtioDevice: VIRTIO_DEVICE.block },
  { name: 'virtio_console', required: true, virtioDevice: VIRTIO_DEVICE.console },
  { name: 'virtio_rng', required: false, virtioDevice: VIRTIO_DEVICE.entropy },
  // The NIC (sandbox networking); its failover dependencies are listed so they too load only with it.
  { name: 'failover', required: false, virtioDevice: VIRTIO_DEVICE.net },
  { name: 'net_failover', required: false, virtioDevice: VIRTIO_DEVICE.net },
  { name: 'virtio_net', required: false, virtioDevice: VIRTIO_DEVICE.net },
  { name: 'squashfs', required: true },
  { name: 'overlay', required: true },
  { name: 'vsock', required: false, virtioDevice: VIRTIO_DEVICE.vsock },
  { name: 'vmw_vsock_virtio_transport_common', required: false, virtioDevice: VIRTIO_DEVICE.vsock },
  { name: 'vmw_vsock_virtio_transport', required: false, virtioDevice: VIRTIO_DEVICE.vsock },
];

export interface GuestModule {
  /** Normalised module name (dashes as underscores). */
  name: string;
  /** File name inside the initramfs, e.g. "virtio_blk.ko". */
  fileName: string;
  /** Source path under /lib/modules. */
  sourcePath: string;
  /** Loaded only when a virtio device of this ID exists (see WantedModule). */
  virtioDevice?: number;
}

const MODULE_SIG_MAGIC = Buffer.from('~Module signature appended~\n');

export function moduleName(path: string): string {
  return basename(path)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');
}

/** Resolves `wanted` into a load order (dependencies first); built-in modules are dropped. */
export async function resolveModules(modulesDir: string, wanted = GUEST_MODULES): Promise<GuestModule[]> {
  const depText = await readFile(`${modulesDir}/modules.dep`, 'utf8');
  const builtinText = await readFile(`${modulesDir}/modules.builtin`, 'utf8').catch(() => '');
  const builtin = new Set(builtinText.split('\n').filter(Boolean).map(moduleName));
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of depText.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon);
    const list = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .filter(Boolean);
    deps.set(moduleName(path), { path, deps: list.map(moduleName) });
  }
  const order: GuestModule[] = [];
  const seen = new Set<string>();
  const visit = (name: string, chain: string[]): void => {
    if (seen.has(name) || builtin.has(name)) return;
    const entry = deps.get(name);
    if (!entry) throw new Error(`module ${name} (needed by ${chain.join(' → ') || 'kiln'}) is neither built in nor in ${modulesDir}`);
    seen.add(name);
    // modules.dep lists the deepest dependency last; load it first.
    for (const d of [...entry.deps].reverse()) visit(d, [...chain, name]);
    order.push({ name, fileName: `${name}.ko`, sourcePath: `${modulesDir}/${entry.path}` });
  };
  for (const w of wanted) {
    const name = w.name.replace(/-/g, '_');
    if (builtin.has(name)) continue;
    if (!deps.has(name)) {
      if (w.required) throw new KilnError('IMAGE_MISSING', `the guest kernel has no ${name} module (${modulesDir}); kiln needs Debian's linux-image-cloud-amd64`);
      continue;
    }
    visit(name, []);
  }
  // A device condition holds only where every module that needs this one has the same condition:
  // a module some unconditional module depends on is always loaded.
  const device = new Map(wanted.filter((w) => w.virtioDevice !== undefined).map((w) => [w.name.replace(/-/g, '_'), w.virtioDevice!]));
  for (const m of order) {
    for (const d of dependencies(m.name, deps)) {
      if (device.has(d) && device.get(d) !== device.get(m.name)) device.delete(d);
    }
  }
  return order.map((m) => (device.has(m.name) ? { ...m, virtioDevice: device.get(m.name) } : m));
}

/** Every module `name` needs, directly or through others. */
function dependencies(name: string, deps: Map<string, { deps: string[] }>): Set<string> {
  const out = new Set<string>();
  const walk = (n: string): void => {
    for (const d of deps.get(n)?.deps ?? [])
      if (!out.has(d)) {
        out.add(d);
        walk(d);
      }
  };
  walk(name);
  return out;
}

/** `/kiln/modules.order`: one module a line, `<file> [<virtio device ID it needs>]`. */
export function modulesOrder(modules: GuestModule[]): string {
  return modules.map((m) => (m.virtioDevice === undefined ? `${m.fileName}\n` : `${m.fileName} ${m.virtioDevice}\n`)).join('');
}

/** Reads a module, decompressing .xz/.zst/.gz, and strips an appended signature. */
export async function loadModuleBytes(path: string): Promise<Buffer> {
  let data: Buffer;
  if (path.endsWith('.gz')) data = gunzipSync(await readFile(path));
  else if (path.endsWith('.xz')) data = await decompressWith('xz', path);
  else if (path.endsWith('.zst')) data = await decompressWith('zstd', path);
  else data = await readFile(path);
  return stripSignature(data);
}

async function decompressWith(tool: string, path: string): Promise<Buffer> {
  try {
    const { stdout } = await execFileAsync(tool, ['-d', '-c', path], { encoding: 'buffer', maxBuffer: 64 << 20 });
    return stdout;
  } catch (e) {
    throw new KilnError('IMAGE_MISSING', `cannot decompress ${path} with ${tool}: install the ${tool === 'xz' ? 'xz-utils' : tool} package`, { cause: e });
  }
}

/**
 * Layout at the end of a signed module: <module><signature><struct module_signature (12 bytes,
 * sig_len big-endian in the last 4)><magic>.
 */
export function stripSignature(data: Buffer): Buffer {
  if (data.length < MODULE_SIG_MAGIC.length + 12) return data;
  const magicAt = data.length - MODULE_SIG_MAGIC.length;
  if (!data.subarray(magicAt).equals(MODULE_SIG_MAGIC)) return data;
  const info = data.subarray(magicAt - 12, magicAt);
  const signerLen = info[3]!;
  const keyIdLen = info[4]!;
  const sigLen = info.readUInt32BE(8);
  const end = magicAt - 12 - sigLen - signerLen - keyIdLen;
  if (end <= 0) return data;
  return data.subarray(0, end);
}
