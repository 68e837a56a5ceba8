/**
 * A Firecracker VM's own network namespace, made and named by kiln (docs/networking.md). A jailed
 * or confined VM's TAP lives there (the jailer joins it with `--netns <path>` before it drops
 * privileges; a confined Firecracker's bwrap is started in it), so kiln's bridge reaches it
 * through a veth pair: the host end takes the network plan's name on the
 * bridge (what the network manager expects of any backend), the other end and the TAP are ports of
 * a small bridge inside the namespace, and the guest's eth0 is on the same layer-2 segment as a
 * QEMU guest's TAP would be: its address, gateway and resolvers come from the agent (net.config).
 *
 *   guest eth0 ─ TAP kq… ─┐ bridge kbr0 ├─ veth0 ══ kv… (host) ─ kiln's bridge <name>0
 *                        (the VM's namespace)
 *
 * Named namespaces (`ip netns add`, a handle under /run/netns) rather than a bind of an unshared
 * namespace under kiln's run dir: the jailer's documented usage is `--netns /var/run/netns/<name>`,
 * every command inside is a plain `ip -n <name>`, iproute2 makes the handle's mount visible from
 * other mount namespaces, and an operator sees them with `ip netns`. Ownership is by name: the
 * prefix carries a hash of the run dir (as the VMM cgroups do), so the start-up scan of one service
 * instance never removes another's.
 */
import { readdir } from 'node:fs/promises';
import type { SandboxNetworkPlan } from '../../core/backend.js';
import { KilnError } from '../../core/errors.js';
import { ifNameProblem } from '../../core/host-taps.js';
import { vmmCgroupName } from '../../core/vmm-identities.js';
import { bridgePortCommands } from '../../net/link.js';
import { runTool, ToolError } from '../../net/run.js';
import type { AgentClient } from '../../protocol/agent-client.js';

const NETNS_DIR = '/run/netns';
/** Inside every VM namespace: the bridge joining the TAP and the veth's inner end. */
export const JAIL_BRIDGE = 'kbr0';
export const JAIL_UPLINK = 'veth0';
const NET_CONFIG_TIMEOUT_MS = 10_000;

/** `kfc-<hash of the run dir>-` (`kfc-` for /run/kiln): this instance's VM namespaces. */
export function netnsPrefix(runDir: string): string {
  return `${vmmCgroupName('kfc', runDir)}-`;
}

/** The handle the jailer opens (`--netns`). */
export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

const gone = (e: unknown): boolean => e instanceof ToolError && /Cannot find device|does not exist|No such file|Cannot open network namespace/.test(e.stderr);

export async function createNetns(name: string): Promise<void> {
  await runTool('ip', ['netns', 'add', name]);
}

/**
 * Deletes the veth pair (its host end on kiln's bridge goes with it, at once rather than when the
 * kernel gets round to freeing the namespace) and the namespace's handle. Idempotent.
 */
export async function deleteNetns(name: string): Promise<void> {
  await runTool('ip', ['-n', name, 'link', 'del', JAIL_UPLINK]).catch((e: unknown) => {
    if (!gone(e)) throw e;
  });
  await runTool('ip', ['netns', 'del', name]).catch((e: unknown) => {
    if (!gone(e)) throw e;
  });
}

/** The bridge inside the namespace with the (down) TAP on it; no IPv6 link-local chatter from either. */
export async function bridgeTap(netns: string, tap: string): Promise<void> {
  const lines = [`link add ${JAIL_BRIDGE} type bridge`, `link set dev ${JAIL_BRIDGE} addrgenmode none`, `link set dev ${tap} addrgenmode none`, `link set dev ${tap} master ${JAIL_BRIDGE}`];
  await runTool('ip', ['-n', netns, '-batch', '-'], `${lines.join('\n')}\n`);
}

/** Start-up scan: this instance's namespaces no live VM owns (their Firecracker was killed first). */
export async function removeLeftoverNetns(prefix: string, keep: ReadonlySet<string>): Promise<string[]> {
  const out: string[] = [];
  for (const name of await readdir(NETNS_DIR).catch(() => [] as string[])) {
    if (!name.startsWith(prefix) || keep.has(name)) continue;
    try {
      await deleteNetns(name);
      out.push(`removed leftover network namespace ${name}`);
    } catch (e) {
      out.push(`could not remove leftover network namespace ${name}: ${(e as Error).message}`);
    }
  }
  return out;
}

/**
 * connectNetwork of a VM in its own namespace: the veth pair (host end named and bridged as the
 * plan says, inner end made inside the namespace), both ends and the TAP up, then net.config in
 * the guest. A failure after the pair exists deletes it; a guest failure takes the TAP down again.
 */
export async function connectJailNetwork(o: { netns: string; tap: string; plan: SandboxNetworkPlan; agent: Pick<AgentClient, 'netConfig'> }): Promise<{ hostMs: number; guestMs: number }> {
  const { plan, netns } = o;
  const problem = ifNameProblem(plan.hostIf);
  if (problem) throw new KilnError('INVALID_REQUEST', `the network plan's host interface name ${problem}`);
  const t0 = performance.now();
  const pair = ['link', 'add', plan.hostIf, 'type', 'veth', 'peer', 'name', JAIL_UPLINK, 'netns', netns];
  try {
    await runTool('ip', pair).catch(async (e: unknown) => {
      // A reconnect whose earlier pair is still there: the VM's side starts again from its bridge and TAP alone.
      if (!(e instanceof ToolError && /File exists/.test(e.stderr))) throw e;
      await runTool('ip', ['-n', netns, 'link', 'del', JAIL_UPLINK]);
      await runTool('ip', pair);
    });
  } catch (e) {
    throw new KilnError('INTERNAL', `the veth pair ${plan.hostIf} into the VM's network namespace ${netns} could not be made: ${(e as Error).message}`, { cause: e });
  }
  try {
    const inner = [
      `link set dev ${JAIL_UPLINK} addrgenmode none`,
      `link set dev ${JAIL_UPLINK} master ${JAIL_BRIDGE}`,
      `link set dev ${JAIL_UPLINK} up`,
      `link set dev ${o.tap} up`,
      `link set dev ${JAIL_BRIDGE} up`,
    ];
    await runTool('ip', ['-n', netns, '-batch', '-'], `${inner.join('\n')}\n`);
    const host = plan.bridge ? bridgePortCommands(plan.hostIf, plan.bridge) : [`link set ${plan.hostIf} up`];
    await runTool('ip', ['-batch', '-'], `${host.join('\n')}\n`);
  } catch (e) {
    await runTool('ip', ['link', 'del', plan.hostIf]).catch(() => undefined);
    throw new KilnError('INTERNAL', `the VM's link ${plan.hostIf} could not be brought up${plan.bridge ? ` on ${plan.bridge}` : ''} and bridged to its TAP in ${netns}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const t1 = performance.now();
  try {
    await o.agent.netConfig(plan, AbortSignal.timeout(NET_CONFIG_TIMEOUT_MS));
  } catch (e) {
    await runTool('ip', ['-n', netns, 'link', 'set', 'dev', o.tap, 'down']).catch(() => undefined);
    throw e;
  }
  const ms = (from: number, to: number) => Math.round((to - from) * 10) / 10;
  return { hostMs: ms(t0, t1), guestMs: ms(t1, performance.now()) };
}
