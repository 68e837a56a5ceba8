/**
 * The host end of a VM's NIC: a TAP the fd wrapper creates at spawn (`kiln-agent --exec-clean-fds
 * N --tap kq…`, agent/tap_linux.go) and QEMU inherits open (`-netdev tap,fd=`). It is not
 * persistent, so it goes away with QEMU: on destroy, on every failed start, with a killed
 * service's orphans. Until connectNetwork it is down and on no bridge: the guest reaches nothing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** Prefix of the TAPs made at spawn; the network manager renames them to its own (`kt…`). */
export const TAP_PREFIX = 'kq';
/** kiln's TAP names (ours at boot, the manager's after connectNetwork): what the start-up scan looks at. */
export const KILN_TAP = /^k[qt]/;
const IFNAMSIZ_MAX = 15;

const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip'].find((p) => existsSync(p)) ?? 'ip';

export function newTapName(): string {
  return `${TAP_PREFIX}${randomBytes(4).toString('hex')}`;
}

/** Why `name` cannot be a host interface name, or undefined. */
export function ifNameProblem(name: string): string | undefined {
  if (Buffer.byteLength(name) > IFNAMSIZ_MAX || !/^[A-Za-z0-9_.-]+$/.test(name) || name === '.' || name === '..') {
    return `"${name}" must be 1-${IFNAMSIZ_MAX} letters, digits, "-", "_" or "."`;
  }
  return undefined;
}

/** Renames the (down) TAP and brings it up, in one netlink request: the name changes first. */
export async function renameAndUp(current: string, name: string): Promise<void> {
  await ip(current === name ? ['link', 'set', 'dev', current, 'up'] : ['link', 'set', 'dev', current, 'name', name, 'up']);
}

export async function setDown(name: string): Promise<void> {
  await ip(['link', 'set', 'dev', name, 'down']);
}

async function ip(args: string[]): Promise<void> {
  try {
    await execFileAsync(IP, args, { timeout: 5000 });
  } catch (e) {
    const stderr = (e as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(' ')}: ${stderr || (e as Error).message}`, { cause: e });
  }
}

/** TAP devices (tun_flags in sysfs) whose name matches. */
export async function listTaps(match: RegExp): Promise<string[]> {
  const names = await readdir('/sys/class/net').catch(() => [] as string[]);
  return names.filter((n) => match.test(n) && existsSync(`/sys/class/net/${n}/tun_flags`));
}

/** Names of the TUN/TAP devices some process holds open (`iff:` in its fdinfo). */
export async function heldTaps(): Promise<Set<string>> {
  const held = new Set<string>();
  for (const pid of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      if ((await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) !== '/dev/net/tun') continue;
      const iff = /^iff:\s*(\S+)/m.exec(await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => ''))?.[1];
      if (iff) held.add(iff);
    }
  }
  return held;
}

/**
 * Start-up scan: kiln-named TAPs no process holds (persistent ones a crashed run or the network
 * manager left; a VM's own TAP vanishes with its QEMU, which the scan kills first). A TAP held by
 * a live VM, this service's or another instance's, stays.
 */
export async function removeLeftoverTaps(match: RegExp = KILN_TAP): Promise<string[]> {
  const taps = await listTaps(match);
  if (taps.length === 0) return [];
  const held = await heldTaps();
  const removed: string[] = [];
  for (const name of taps) {
    if (held.has(name)) continue;
    try {
      await ip(['link', 'delete', 'dev', name]);
      removed.push(`removed leftover TAP ${name}`);
    } catch (e) {
      if (existsSync(`/sys/class/net/${name}`)) removed.push(`could not remove leftover TAP ${name}: ${(e as Error).message}`);
    }
  }
  return removed;
}
