/**
 * The host end of a microVM's NIC, a TAP per VM. QEMU's is made by the fd wrapper at spawn
 * (`kiln-agent --exec-clean-fds N --tap kq…`, agent/tap_linux.go) and inherited open: not
 * persistent, it goes away with QEMU (destroy, every failed start, a killed service's orphans).
 * Firecracker opens its TAP by name, so its is made persistent here (createTap) and deleted with
 * the VM. Until connectNetwork a TAP is down and on no bridge: the guest reaches nothing.
 */

import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, readlink } from 'node:fs/promises';
import { promisify } from 'node:util';
import { bridgePortCommands } from '../net/link.js';
import { runTool } from '../net/run.js';
import type { AgentClient } from '../protocol/agent-client.js';
import type { SandboxNetworkPlan } from './backend.js';
import { KilnError } from './errors.js';

const execFileAsync = promisify(execFile);

/** Every VM's NIC starts with this MAC (a clone wakes with its template's anyway); net.config sets the sandbox's. */
export const INITIAL_GUEST_MAC = '02:6b:69:6c:6e:00';

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

/** A network namespace the TAP is in (a jailed Firecracker's); undefined: the host's. */
export type Netns = string | undefined;

/** Renames the (down) TAP and brings it up, in one netlink request: the name changes first. */
export async function renameAndUp(current: string, name: string, netns?: Netns): Promise<void> {
  await ip(inNetns(netns, current === name ? ['link', 'set', 'dev', current, 'up'] : ['link', 'set', 'dev', current, 'name', name, 'up']));
}

export async function setDown(name: string, netns?: Netns): Promise<void> {
  await ip(inNetns(netns, ['link', 'set', 'dev', name, 'down']));
}

/**
 * A persistent TAP, down, that `uid`/`gid` may open by name (Firecracker opens it as the VM's
 * uid, with vnet headers). Deleted with deleteTap; the start-up scan removes one nobody holds.
 */
export async function createTap(name: string, o: { uid: number; gid: number; netns?: Netns }): Promise<void> {
  await ip(inNetns(o.netns, ['tuntap', 'add', 'dev', name, 'mode', 'tap', 'vnet_hdr', 'user', String(o.uid), 'group', String(o.gid)]));
}

export async function deleteTap(name: string, netns?: Netns): Promise<void> {
  try {
    await ip(inNetns(netns, ['link', 'delete', 'dev', name]));
  } catch (e) {
    // Already gone (its namespace went first) is what we wanted.
    if (!/Cannot find device|does not exist|No such/.test((e as Error).message)) throw e;
  }
}

function inNetns(netns: Netns, args: string[]): string[] {
  return netns ? ['-n', netns, ...args] : args;
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

/** net.config is a handful of ioctls and one file write in the guest. */
const NET_CONFIG_TIMEOUT_MS = 10_000;

/**
 * connectNetwork of a microVM whose TAP is in the host's namespace (QEMU; Firecracker unconfined;
 * a confined or jailed Firecracker's is in its own, see firecracker/netns.ts): the TAP takes the plan's name, joins the plan's bridge
 * and comes up, then the guest agent sets eth0's address, MAC, route and
 * resolvers (`net.config`) before user code runs. `renamed` learns the TAP's new name as soon as
 * it has it (the VM's undo deletes it by that name). On a guest failure the TAP goes down again.
 */
export async function connectVmNetwork(o: {
  tap: string;
  plan: SandboxNetworkPlan;
  agent: Pick<AgentClient, 'netConfig'>;
  renamed: (name: string) => void;
}): Promise<{ hostMs: number; guestMs: number }> {
  const { plan } = o;
  const problem = ifNameProblem(plan.hostIf);
  if (problem) throw new KilnError('INVALID_REQUEST', `the network plan's host interface name ${problem}`);
  const t0 = performance.now();
  try {
    if (plan.bridge) {
      // Renamed while down, then on the bridge and up, in one batch.
      const rename = o.tap === plan.hostIf ? [] : [`link set dev ${o.tap} name ${plan.hostIf}`];
      await runTool('ip', ['-batch', '-'], `${[...rename, ...bridgePortCommands(plan.hostIf, plan.bridge)].join('\n')}\n`);
    } else await renameAndUp(o.tap, plan.hostIf);
  } catch (e) {
    throw new KilnError('INTERNAL', `the VM's TAP ${o.tap} could not be renamed to ${plan.hostIf} and brought up${plan.bridge ? ` on ${plan.bridge}` : ''}: ${(e as Error).message}`, { cause: e });
  }
  o.renamed(plan.hostIf);
  const t1 = performance.now();
  try {
    await o.agent.netConfig(plan, AbortSignal.timeout(NET_CONFIG_TIMEOUT_MS));
  } catch (e) {
    await setDown(plan.hostIf).catch(() => undefined);
    throw e;
  }
  const ms = (from: number, to: number) => Math.round((to - from) * 10) / 10;
  return { hostMs: ms(t0, t1), guestMs: ms(t1, performance.now()) };
}
