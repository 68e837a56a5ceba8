/**
 * kiln's nftables table (one per service, `inet <name>`; no other table is touched): NAT out of the
 * uplink, the resolver and proxy redirects, the operator's deny list, and one chain pair per
 * sandbox. Every change is one `nft -f` transaction, so a half-applied ruleset never exists.
 *
 * Refused packets are logged with the prefix `<name>:<why> ` (read back from the kernel log by
 * audit.ts) and answered at once: a TCP reset or an ICMP admin-prohibited, never a silent drop.
 */
import { type Cidr, formatCidr, formatIp } from './addr.js';
import { type CompiledPolicy, INSPECTED_PORTS } from './policy.js';
import { runTool } from './run.js';

const BYTES_PER_MBIT = 125_000;
/**
 * The send policer's burst. nftables' byte limiter holds one second of its rate plus this, so the
 * namespace backend's token bucket on eth0 (256 KiB bursts) always passes it whole.
 */
export const SEND_BURST_BYTES = 256 * 1024;

export interface TableShape {
  table: string;
  bridge: string;
  uplink: string;
  subnet: Cidr;
  gateway: number;
  deny: Cidr[];
  dnsPort: number;
  tlsPort: number;
  httpPort: number;
}

/** Log prefixes, also parsed back by audit.ts. */
export const LOG = { refused: 'x', deny: 'deny', host: 'host', allowed: 'ok', learned: 'learn' } as const;

function refuseRules(t: TableShape, chain: string, why: string): string[] {
  return [
    `add rule inet ${t.table} ${chain} meta l4proto tcp log prefix "${t.table}:${why} " reject with tcp reset`,
    `add rule inet ${t.table} ${chain} log prefix "${t.table}:${why} " reject with icmpx admin-prohibited`,
  ];
}

/** The whole table, replacing any earlier one of the same name (the start-up scan's clean slate). */
export function baseRuleset(t: TableShape, exists: boolean): string {
  const T = `inet ${t.table}`;
  const gw = formatIp(t.gateway);
  const deny = t.deny.map(formatCidr).join(', ');
  return [
    ...(exists ? [`delete table ${T}`] : []),
    `add table ${T}`,
    `add set ${T} deny { type ipv4_addr; flags interval; auto-merge; ${deny ? `elements = { ${deny} };` : ''} }`,
    `add map ${T} egress_by_sandbox { type ipv4_addr : verdict; }`,
    `add map ${T} nat_by_sandbox { type ipv4_addr : verdict; }`,
    `add map ${T} send_by_sandbox { type ipv4_addr : verdict; }`,
    // Chains first: a jump must name a chain that exists.
    `add chain ${T} egress`,
    `add chain ${T} refuse`,
    `add chain ${T} refuse_deny`,
    `add chain ${T} prerouting_nat { type nat hook prerouting priority dstnat; policy accept; }`,
    // Every DNS query goes to kiln's resolver, whatever server the sandbox names.
    `add rule ${T} prerouting_nat iifname "${t.bridge}" meta l4proto { tcp, udp } th dport 53 dnat ip to ${gw}:${t.dnsPort}`,
    `add rule ${T} prerouting_nat iifname "${t.bridge}" ip saddr vmap @nat_by_sandbox`,
    // What a sandbox sends, before it is routed (to the uplink or to kiln's resolver and gate): its policer.
    `add chain ${T} prerouting_filter { type filter hook prerouting priority filter; policy accept; }`,
    `add rule ${T} prerouting_filter iifname "${t.bridge}" ip saddr vmap @send_by_sandbox`,
    `add chain ${T} postrouting_nat { type nat hook postrouting priority srcnat; policy accept; }`,
    `add rule ${T} postrouting_nat oifname "${t.uplink}" ip saddr ${formatCidr(t.subnet)} masquerade`,
    `add chain ${T} forward_filter { type filter hook forward priority filter; policy accept; }`,
    `add rule ${T} forward_filter iifname "${t.bridge}" jump egress`,
    `add rule ${T} forward_filter oifname "${t.bridge}" ct state established,related accept`,
    `add rule ${T} forward_filter oifname "${t.bridge}" drop`,
    `add rule ${T} egress ct state established,related accept`,
    `add rule ${T} egress meta nfproto ipv6 drop`,
    // Only ever out through the uplink: a wrong rule drops instead of reaching another network.
    `add rule ${T} egress oifname != "${t.uplink}" jump refuse_deny`,
    `add rule ${T} egress ip daddr @deny jump refuse_deny`,
    `add rule ${T} egress ip saddr vmap @egress_by_sandbox`,
    `add rule ${T} egress jump refuse`,
    ...refuseRules(t, 'refuse', LOG.refused),
    ...refuseRules(t, 'refuse_deny', LOG.deny),
    // kiln's own traffic from the gateway address (resolver, TLS/HTTP gate) may leave by the uplink only.
    `add chain ${T} output_filter { type filter hook output priority filter; policy accept; }`,
    `add rule ${T} output_filter ip saddr ${formatCidr(t.subnet)} oifname != { "${t.uplink}", "${t.bridge}", "lo" } log prefix "${t.table}:${LOG.deny} " drop`,
    `add chain ${T} input_filter { type filter hook input priority filter; policy accept; }`,
    `add rule ${T} input_filter iifname "${t.bridge}" ct state established,related accept`,
    `add rule ${T} input_filter iifname "${t.bridge}" ip daddr ${gw} udp dport ${t.dnsPort} accept`,
    `add rule ${T} input_filter iifname "${t.bridge}" ip daddr ${gw} tcp dport { ${t.dnsPort}, ${t.tlsPort}, ${t.httpPort} } accept`,
    `add rule ${T} input_filter iifname "${t.bridge}" meta l4proto tcp log prefix "${t.table}:${LOG.host} " reject with tcp reset`,
    `add rule ${T} input_filter iifname "${t.bridge}" log prefix "${t.table}:${LOG.host} " reject with icmpx admin-prohibited`,
    '',
  ].join('\n');
}

/** The per-sandbox names: chains e_<tag> (egress), n_<tag> (nat) and s_<tag> (send policer), sets w_<tag> (web by name) and p_<tag> (name:port). */
export function sandboxTag(ip: number): string {
  return ip.toString(16).padStart(8, '0');
}

function portMatch(port: number | undefined): string {
  return port === undefined ? '' : ` meta l4proto { tcp, udp } th dport ${port}`;
}

/** Adds one sandbox's chains and sets and routes its traffic into them (one transaction). */
export function addSandbox(t: TableShape, ip: number, p: CompiledPolicy): string {
  const T = `inet ${t.table}`;
  const tag = sandboxTag(ip);
  const addr = formatIp(ip);
  const gw = formatIp(t.gateway);
  const lines = [
    `add set ${T} w_${tag} { type ipv4_addr; flags timeout; }`,
    `add set ${T} p_${tag} { type ipv4_addr . inet_service; flags timeout; }`,
    `add chain ${T} e_${tag}`,
    `add chain ${T} n_${tag}`,
    `add chain ${T} s_${tag}`,
  ];
  // Packets over the rate are dropped (a policer: this kernel has no act_police, QEMU no netdev limiter).
  if (p.bandwidthMbit > 0) lines.push(`add rule ${T} s_${tag} limit rate over ${p.bandwidthMbit * BYTES_PER_MBIT} bytes/second burst ${SEND_BURST_BYTES} bytes counter drop`);
  if (p.policy === 'open') lines.push(`add rule ${T} e_${tag} ct state new log prefix "${t.table}:${LOG.allowed} " accept`);
  else {
    for (const r of p.cidrs) lines.push(`add rule ${T} e_${tag} ip daddr ${formatCidr(r.cidr)}${portMatch(r.port)} ct state new log prefix "${t.table}:${LOG.allowed} " accept`);
    lines.push(`add rule ${T} e_${tag} ip daddr . th dport @p_${tag} ct state new log prefix "${t.table}:${LOG.allowed} " accept`);
    if (p.learn) lines.push(`add rule ${T} e_${tag} ct state new log prefix "${t.table}:${LOG.learned} " accept`);
    // CIDR-allowed addresses are reached directly even on 80/443; names go through the proxy.
    for (const r of p.cidrs)
      if (r.port === undefined || r.port === INSPECTED_PORTS.http || r.port === INSPECTED_PORTS.tls) lines.push(`add rule ${T} n_${tag} ip daddr ${formatCidr(r.cidr)}${portMatch(r.port)} return`);
    if (!p.learn) {
      lines.push(`add rule ${T} n_${tag} ip daddr @w_${tag} tcp dport ${INSPECTED_PORTS.tls} dnat ip to ${gw}:${t.tlsPort}`);
      lines.push(`add rule ${T} n_${tag} ip daddr @w_${tag} tcp dport ${INSPECTED_PORTS.http} dnat ip to ${gw}:${t.httpPort}`);
    }
  }
  lines.push(
    `add element ${T} egress_by_sandbox { ${addr} : jump e_${tag} }`,
    `add element ${T} nat_by_sandbox { ${addr} : jump n_${tag} }`,
    `add element ${T} send_by_sandbox { ${addr} : jump s_${tag} }`,
    '',
  );
  return lines.join('\n');
}

export function removeSandbox(t: TableShape, ip: number): string {
  const T = `inet ${t.table}`;
  const tag = sandboxTag(ip);
  const addr = formatIp(ip);
  return [
    `delete element ${T} egress_by_sandbox { ${addr} }`,
    `delete element ${T} nat_by_sandbox { ${addr} }`,
    `delete element ${T} send_by_sandbox { ${addr} }`,
    `delete chain ${T} e_${tag}`,
    `delete chain ${T} n_${tag}`,
    `delete chain ${T} s_${tag}`,
    `delete set ${T} w_${tag}`,
    `delete set ${T} p_${tag}`,
    '',
  ].join('\n');
}

/**
 * Admits addresses a name resolved to for `seconds`: to the proxy (web) or for a port. Re-adding an
 * element does not refresh its timeout, so each is deleted and added again in the same transaction.
 */
export function admit(t: TableShape, ip: number, entries: { dest: string; port?: number }[], seconds: number): string {
  const T = `inet ${t.table}`;
  const tag = sandboxTag(ip);
  const lines: string[] = [];
  for (const e of entries) {
    const [set, key] = e.port === undefined ? [`w_${tag}`, e.dest] : [`p_${tag}`, `${e.dest} . ${e.port}`];
    lines.push(`add element ${T} ${set} { ${key} }`, `delete element ${T} ${set} { ${key} }`, `add element ${T} ${set} { ${key} timeout ${seconds}s }`);
  }
  return `${lines.join('\n')}\n`;
}

export function nft(script: string): Promise<string> {
  return runTool('nft', ['-f', '-'], script);
}

export async function tableExists(table: string): Promise<boolean> {
  const out = await runTool('nft', ['list', 'tables', 'inet']);
  return out.split('\n').some((l) => l.trim() === `table inet ${table}`);
}
