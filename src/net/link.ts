/** How a sandbox's host link joins kiln's bridge: the `ip -batch` lines every backend uses. */

/**
 * The port is isolated (no frames to or from other isolated ports: sandboxes never see each other
 * at layer 2) and does not learn addresses; the host answers ARP for everything on the bridge
 * (proxy_arp_pvlan), so traffic between sandboxes goes through the firewall and is refused there.
 */
export function bridgePortCommands(hostIf: string, bridge: string): string[] {
  return [`link set ${hostIf} master ${bridge}`, `link set dev ${hostIf} type bridge_slave isolated on learning off`, `link set ${hostIf} up`];
}
