/**
 * The jailer (Firecracker's companion binary) when present: a chroot per microVM, a dedicated
 * uid/gid, cgroup v1/v2 limits via `--cgroup`, and its own network namespace. Everything the VM
 * opens must live inside the chroot; the helpers here map a sandbox's limits to jailer arguments.
 */
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { basename, delimiter, isAbsolute, join } from 'node:path';

export interface JailerSettings {
  jailerPath: string;
  /** Base of the chroots: `<chrootBaseDir>/<firecracker exec name>/<id>/root`. */
  chrootBaseDir: string;
  cgroupVersion: 1 | 2;
  /** Parent cgroup the jailer creates the VM's cgroup under. */
  parentCgroup: string;
  /** First uid handed to jailed VMs; each live VM gets its own. */
  uidBase: number;
  uidCount: number;
  gid: number;
  /** A network namespace per VM, made by kiln (netns.ts) and passed with `--netns`: the VM's TAP lives there. */
  netns: boolean;
}

export interface CgroupLimitsInput {
  vcpus: number;
  memoryMib: number;
}

/** Firecracker's own overhead beyond guest RAM is a few MiB; leave room for page tables and buffers. */
export function vmmMemoryLimitBytes(memoryMib: number): number {
  return (memoryMib + 32 + Math.ceil(memoryMib * 0.02)) * 1024 * 1024;
}

const CPU_PERIOD_US = 100_000;

/** `--cgroup` values for the VM: guest vCPUs plus a share for the VMM's API and I/O threads. */
export function cgroupLimits(version: 1 | 2, input: CgroupLimitsInput): string[] {
  const quotaUs = Math.round((input.vcpus + 0.25) * CPU_PERIOD_US);
  const memBytes = vmmMemoryLimitBytes(input.memoryMib);
  if (version === 2) return [`cpu.max=${quotaUs} ${CPU_PERIOD_US}`, `memory.max=${memBytes}`, 'memory.swap.max=0'];
  return [`cpu.cfs_period_us=${CPU_PERIOD_US}`, `cpu.cfs_quota_us=${quotaUs}`, `memory.limit_in_bytes=${memBytes}`];
}

export interface JailerArgsInput {
  id: string;
  firecrackerPath: string;
  uid: number;
  gid: number;
  limits: CgroupLimitsInput;
  netnsPath?: string;
  /** API socket path inside the chroot. */
  apiSocketInJail: string;
}

export function jailerArgv(s: JailerSettings, input: JailerArgsInput): string[] {
  const argv = [
    '--id',
    input.id,
    '--exec-file',
    input.firecrackerPath,
    '--uid',
    String(input.uid),
    '--gid',
    String(input.gid),
    '--chroot-base-dir',
    s.chrootBaseDir,
    '--cgroup-version',
    String(s.cgroupVersion),
    '--parent-cgroup',
    s.parentCgroup,
  ];
  for (const c of cgroupLimits(s.cgroupVersion, input.limits)) argv.push('--cgroup', c);
  if (input.netnsPath) argv.push('--netns', input.netnsPath);
  argv.push('--', '--api-sock', input.apiSocketInJail);
  return argv;
}

/** Host path of a VM's chroot root, as the jailer lays it out. */
export function jailRoot(s: Pick<JailerSettings, 'chrootBaseDir'>, firecrackerPath: string, id: string): string {
  return join(s.chrootBaseDir, basename(firecrackerPath), id, 'root');
}

/** An executable by explicit path or on PATH; undefined when not found. */
export async function findExecutable(name: string, explicit?: string, envPath = process.env.PATH ?? ''): Promise<string | undefined> {
  const candidates = explicit
    ? [explicit]
    : envPath
        .split(delimiter)
        .filter(Boolean)
        .map((d) => join(d, name));
  for (const c of candidates) {
    if (!isAbsolute(c)) continue;
    if (
      await access(c, constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return c;
  }
  return undefined;
}

/** Each live jailed VM runs as its own uid (the allocator is shared with the QEMU backend). */
export { UidPool } from '../../core/uids.js';
