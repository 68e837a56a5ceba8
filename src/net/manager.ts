/**
 * Sandbox networking (docs/networking.md): one bridge per service, an address per networked
 * sandbox, kiln's own nftables table and routing table, the filtering resolver, the TLS/HTTP gate
 * and the audit trail. Built with the host's well-kept tools — iproute2 (`ip`, `tc`) and nftables
 * (`nft -f`, one transaction per change) — rather than hand-written netlink.
 *
 * The data path: sandbox eth0 ─ veth/TAP ─ bridge (gateway address, ports isolated from each
 * other) ─ forward chain (per-sandbox policy) ─ uplink only, masqueraded. Sandbox-sourced traffic
 * (and kiln's own resolver/proxy traffic, which leaves from the gateway address) is routed by a
 * routing table of kiln's own (`ip rule from <subnet>`), never by the host's main table, so a
 * wrong rule cannot send it anywhere but the configured uplink.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackendSandbox } from '../core/backend.js';
import type { NetworkConfig } from '../core/config.js';
import { KilnError } from '../core/errors.js';
import {
  NETWORK_EVENTS_KEPT,
  type NetworkEvent,
  type NetworkEventLog,
  type NetworkEventsAnswer,
  type NetworkHooks,
  type NetworkPolicyName,
  type NetworkRequest,
  type SandboxNetworkInfo,
} from '../core/network.js';
import { AddressPool, type Cidr, contains, formatCidr, formatIp, macFor, parseCidr, parseIp } from './addr.js';
import { EventRing, KernelLogFollower, type KernelLogLine, kernelLogEvent } from './audit.js';
import { QTYPE, type Question } from './dns-wire.js';
import { addSandbox, admit, baseRuleset, nft, removeSandbox, sandboxTag, type TableShape, tableExists } from './nft.js';
import { type CompiledPolicy, compilePolicy, nameAllowsWeb, nameRules, normaliseName } from './policy.js';
import { WebGate } from './proxy.js';
import { Resolver } from './resolver.js';
import { runTool, ToolError } from './run.js';

/** Always denied: link-local (incl. cloud metadata 169.254.169.254), loopback, multicast, reserved. */
const BUILTIN_DENY = ['0.0.0.0/8', '127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4', '240.0.0.0/4', '100.100.100.200/32'];
/** How long a resolved address stays admitted at least / at most (a TTL outside is clamped). */
const ADMIT_MIN_SEC = 30;
const ADMIT_MAX_SEC = 3600;

type Log = (msg: string, data?: Record<string, unknown>) => void;

interface SavedState {
  id: string;
  address: string;
  hostIf: string;
  request: NetworkRequest;
}

class NetSandbox {
  readonly events: EventRing;
  /** Names this sandbox resolved and the addresses they gave, for the gate and the proposal. */
  readonly resolved = new Map<string, { ips: string[]; until: number }>();
  /** Learn mode and refusals: what the workload tried to reach (name or address:port). */
  readonly reached = new Map<string, number>();
  /** How long attach took (firewall, link, bridge), ms. */
  attachMs = 0;

  constructor(
    readonly id: string,
    readonly ip: number,
    readonly hostIf: string,
    readonly policy: CompiledPolicy,
    readonly request: NetworkRequest,
    sink?: (e: NetworkEvent) => void,
  ) {
    this.events = new EventRing(sink);
  }

  get address(): string {
    return formatIp(this.ip);
  }
}

export class NetworkManager implements NetworkHooks {
  private readonly subnet: Cidr;
  private readonly pool: AddressPool;
  private readonly shape: Omit<TableShape, 'uplink'> & { uplink?: string };
  private readonly bridge: string;
  private readonly sandboxes = new Map<string, NetSandbox>();
  private readonly byIp = new Map<string, NetSandbox>();
  private up: Promise<void> | undefined;
  private resolver: Resolver | undefined;
  private gate: WebGate | undefined;
  private kernelLog: KernelLogFollower | undefined;
  private uplinkGw: string | undefined;

  constructor(
    private readonly c: NetworkConfig,
    private readonly runDir: string,
    private readonly log: Log = () => undefined,
    /** The store's copy of every sandbox's events (none: memory only, lost with the process). */
    private readonly eventLog?: NetworkEventLog,
  ) {
    const subnet = parseCidr(c.subnet);
    if (!subnet || subnet.prefix < 8 || subnet.prefix > 29) throw new KilnError('INVALID_REQUEST', `KILN_NET_SUBNET "${c.subnet}" is not an IPv4 block from /8 to /29`);
    this.subnet = subnet;
    this.pool = new AddressPool(subnet);
    this.bridge = `${c.name}0`;
    const deny: Cidr[] = [];
    for (const d of [...BUILTIN_DENY, ...c.deny]) {
      const x = parseCidr(d);
      if (!x) throw new KilnError('INVALID_REQUEST', `KILN_NET_DENY entry "${d}" is not an IPv4 address or CIDR block`);
      deny.push(x);
    }
    deny.push(subnet); // other sandboxes, even routed through the gateway
    this.shape = { table: c.name, bridge: this.bridge, subnet, gateway: this.pool.gateway, deny, dnsPort: c.dnsPort, tlsPort: c.tlsPort, httpPort: c.httpPort, uplink: c.uplink };
  }

  private get stateDir(): string {
    return join(this.runDir, 'net');
  }

  private table(): TableShape {
    return { ...this.shape, uplink: this.shape.uplink! };
  }

  get gateway(): string {
    return formatIp(this.pool.gateway);
  }

  /** Checks a create's `network` before anything is made for it (clear 4xx on a bad entry). */
  check(req: NetworkRequest | undefined): CompiledPolicy | undefined {
    const r = req ?? (this.c.defaultPolicy === 'open' ? { policy: 'open' as const } : undefined);
    if (!r || r.policy === 'none') {
      if (r?.allow?.length) compilePolicy(r, this.limits()); // the same clear error as for a wrong policy
      return undefined;
    }
    return compilePolicy(r, this.limits());
  }

  private limits() {
    return { allowOpen: this.c.allowOpen, defaultBandwidthMbit: this.c.defaultBandwidthMbit, maxBandwidthMbit: this.c.maxBandwidthMbit };
  }

  /** Bridge, routing, table, resolver, gate: made at the first networked sandbox (or a restart's first kept one). */
  private ensureUp(): Promise<void> {
    this.up ??= this.bringUp().catch(async (e: Error) => {
      this.up = undefined;
      this.kernelLog?.stop();
      this.resolver?.close();
      await this.gate?.close();
      await this.teardown().catch(() => undefined);
      throw new KilnError('NETWORK_UNAVAILABLE', `sandbox networking could not be set up on this host: ${e.message}`);
    });
    return this.up;
  }

  private async bringUp(): Promise<void> {
    if (!this.shape.uplink || !this.c.uplinkGateway) {
      const out = await runTool('ip', ['-4', '-o', 'route', 'show', 'default']);
      const m = /default via (\S+) dev (\S+)/.exec(out);
      const dev = /default dev (\S+)/.exec(out);
      this.shape.uplink ??= m?.[2] ?? dev?.[1];
      this.uplinkGw = this.c.uplinkGateway ?? (m && m[2] === this.shape.uplink ? m[1] : undefined);
    } else this.uplinkGw = this.c.uplinkGateway;
    if (!this.shape.uplink) throw new Error('no uplink: the host has no default route; set KILN_NET_UPLINK');
    const uplink = this.shape.uplink;
    const gw = formatIp(this.pool.gateway);
    const links = await runTool('ip', ['-o', 'link', 'show']);
    if (!new RegExp(`^\\d+: ${uplink}[@:]`, 'm').test(links)) throw new Error(`the uplink interface ${uplink} does not exist`);
    const haveBridge = new RegExp(`^\\d+: ${this.bridge}[@:]`, 'm').test(links);
    // The firewall first (its output guard included), then the routes that send traffic through it.
    await runTool(
      'ip',
      ['-batch', '-'],
      `${[...(haveBridge ? [] : [`link add ${this.bridge} type bridge`]), `addr replace ${gw}/${this.subnet.prefix} dev ${this.bridge}`, `link set ${this.bridge} up`].join('\n')}\n`,
    );
    await nft(baseRuleset(this.table(), await tableExists(this.c.name)));
    // kiln's table: the sandboxes on the bridge (answers from the gateway address), everything else by the uplink.
    const table = String(this.c.routeTable);
    await runTool(
      'ip',
      ['-batch', '-'],
      `route replace ${formatCidr(this.subnet)} dev ${this.bridge} src ${gw} table ${table}\nroute replace default ${this.uplinkGw ? `via ${this.uplinkGw} ` : ''}dev ${uplink} table ${table}\n`,
    );
    await this.setRule();
    // A lookup only (nothing is sent): traffic from the sandbox subnet must leave by the uplink.
    const probe = this.c.upstreamDns[0] ?? '192.0.2.53';
    const route = await runTool('ip', ['-4', 'route', 'get', probe, 'from', gw]);
    if (!new RegExp(`dev ${uplink}(\\s|$)`).test(route))
      throw new Error(`traffic from ${formatCidr(this.subnet)} would not leave by ${uplink} (${route.trim()}); check KILN_NET_ROUTE_TABLE's rule priority`);
    // Forwarding on the two interfaces only: the host's global switch and other interfaces stay as they are.
    for (const dev of [this.bridge, uplink]) await writeFile(`/proc/sys/net/ipv4/conf/${dev}/forwarding`, '1');
    await writeFile(`/proc/sys/net/ipv6/conf/${this.bridge}/disable_ipv6`, '1').catch(() => undefined);
    // Ports are isolated from each other; the host answers ARP for every address on the bridge
    // (private-VLAN proxy ARP), so a packet for another sandbox reaches the firewall and is refused
    // at once instead of waiting for an ARP reply that never comes.
    for (const f of ['proxy_arp', 'proxy_arp_pvlan']) await writeFile(`/proc/sys/net/ipv4/conf/${this.bridge}/${f}`, '1');
    this.kernelLog = new KernelLogFollower(this.c.name, (l) => this.onKernelLog(l), this.log);
    this.kernelLog.start();
    const upstream = this.c.upstreamDns.length ? this.c.upstreamDns : await systemResolvers();
    this.resolver = new Resolver({ address: gw, port: this.c.dnsPort, upstream, clientFor: (ip) => this.resolverClient(ip), log: this.log });
    await this.resolver.start();
    this.gate = new WebGate({ address: gw, tlsPort: this.c.tlsPort, httpPort: this.c.httpPort, clientFor: (ip) => this.proxyClient(ip) });
    await this.gate.start();
    this.log('network up', { bridge: this.bridge, gateway: gw, subnet: formatCidr(this.subnet), uplink, uplinkGateway: this.uplinkGw, upstreamDns: upstream, table: this.c.name });
  }

  private async setRule(): Promise<void> {
    const pref = String(this.c.routeTable);
    const rules = await runTool('ip', ['-4', 'rule', 'show', 'pref', pref]);
    if (!rules.includes(`from ${formatCidr(this.subnet)} lookup ${pref}`)) {
      if (rules.trim()) await runTool('ip', ['-4', 'rule', 'del', 'pref', pref]).catch(() => undefined);
      await runTool('ip', ['-4', 'rule', 'add', 'pref', pref, 'from', formatCidr(this.subnet), 'lookup', pref]);
    }
  }

  /**
   * Gives a sandbox its network: address, link, firewall chain. On any failure everything made so
   * far is undone and the error names the step.
   */
  async attach(id: string, inner: BackendSandbox, policy: CompiledPolicy, request: NetworkRequest): Promise<SandboxNetworkInfo> {
    if (!inner.connectNetwork) throw new KilnError('UNSUPPORTED_OPTION', `this backend cannot give sandboxes a network`, { details: { field: 'network' } });
    await this.ensureUp();
    const ip = this.pool.take();
    if (ip === undefined) throw new KilnError('NETWORK_UNAVAILABLE', `every address of ${formatCidr(this.subnet)} is in use`, { retryAfterSec: 5 });
    const hostIf = `kv${sandboxTag(ip)}`;
    const sb = new NetSandbox(id, ip, hostIf, policy, request, this.sinkFor(id));
    const t0 = performance.now();
    let stage = 'link';
    try {
      // The firewall chain and the sandbox's link are independent: made side by side.
      this.register(sb);
      const firewall = nft(addSandbox(this.table(), ip, policy));
      const link = inner.connectNetwork({
        hostIf,
        bridge: this.bridge,
        mac: macFor(ip),
        address: formatIp(ip),
        prefix: this.subnet.prefix,
        gateway: this.gateway,
        dns: [this.gateway],
        ...(policy.bandwidthMbit ? { sendMbit: policy.bandwidthMbit } : {}),
      });
      // Both settle before a failure is undone, so the release never races a half-made link or chain.
      const [fw, ln] = await Promise.allSettled([firewall, link]);
      if (fw.status === 'rejected') {
        stage = 'firewall';
        throw fw.reason;
      }
      if (ln.status === 'rejected') throw ln.reason;
      stage = 'rate limit';
      await this.limit(sb);
      sb.attachMs = Math.round((performance.now() - t0) * 10) / 10;
      // Written before the create answers: a service killed from then on restores this network.
      await this.save(sb).catch((e: Error) => this.log('network state not saved; the sandbox keeps its network until the next restart only', { id, error: e.message }));
    } catch (e) {
      await this.release(sb).catch(() => undefined);
      if (e instanceof KilnError) throw e;
      throw new KilnError('NETWORK_UNAVAILABLE', `giving sandbox ${id} its network failed at the ${stage} step: ${(e as Error).message}`);
    }
    return this.info(sb);
  }

  private async limit(sb: NetSandbox): Promise<void> {
    const bw = sb.policy.bandwidthMbit;
    // What the sandbox receives: a token bucket on the host end (what it sends: the policer of addSandbox, and the backend's own, see connectNetwork).
    if (bw > 0) await runTool('tc', ['qdisc', 'replace', 'dev', sb.hostIf, 'root', 'tbf', 'rate', `${bw}mbit`, 'burst', '256kb', 'latency', '100ms']);
  }

  private register(sb: NetSandbox): void {
    this.sandboxes.set(sb.id, sb);
    this.byIp.set(sb.address, sb);
  }

  private async save(sb: NetSandbox): Promise<void> {
    await mkdir(this.stateDir, { recursive: true });
    const st: SavedState = { id: sb.id, address: sb.address, hostIf: sb.hostIf, request: sb.request };
    // Whole or not at all: a kill mid-write leaves a .tmp file (restore removes it), never half a state.
    const file = join(this.stateDir, `${sb.id}.json`);
    await writeFile(`${file}.tmp`, JSON.stringify(st));
    await rename(`${file}.tmp`, file);
  }

  /** Takes a sandbox's network away (after its destroy, or a failed attach). Idempotent. */
  async detach(id: string): Promise<void> {
    const sb = this.sandboxes.get(id);
    if (sb) await this.release(sb);
  }

  private async release(sb: NetSandbox): Promise<void> {
    if (this.sandboxes.get(sb.id) === sb) {
      this.sandboxes.delete(sb.id);
      this.byIp.delete(sb.address);
    }
    const errors: string[] = [];
    await nft(removeSandbox(this.table(), sb.ip)).catch((e: Error) => errors.push(e.message));
    // A veth goes with its namespace; a TAP or a veth whose sandbox lives on does not.
    await runTool('ip', ['link', 'del', sb.hostIf]).catch((e: unknown) => {
      if (!(e instanceof ToolError && /Cannot find device|does not exist/.test(e.stderr))) errors.push((e as Error).message);
    });
    await rm(join(this.stateDir, `${sb.id}.json`), { force: true });
    this.pool.release(sb.ip);
    if (errors.length) this.log('network release left something behind', { id: sb.id, errors });
  }

  /**
   * At start, after the backends reattached what survived: networked sandboxes among `alive` get
   * their address, chain and resolver state back; everything else of an earlier run — state files,
   * leftover links on the bridge, the old table — is removed.
   */
  async restore(alive: Set<string>): Promise<{ restored: string[]; removed: string[] }> {
    const restored: string[] = [];
    const removed: string[] = [];
    const states: SavedState[] = [];
    for (const f of await readdir(this.stateDir).catch(() => [] as string[])) {
      const st = f.endsWith('.json')
        ? await readFile(join(this.stateDir, f), 'utf8')
            .then((t) => JSON.parse(t) as SavedState)
            .catch(() => undefined)
        : undefined;
      if (st && alive.has(st.id)) states.push(st);
      else {
        if (st) await runTool('ip', ['link', 'del', st.hostIf]).catch(() => undefined);
        await rm(join(this.stateDir, f), { force: true });
        removed.push(`network state of ${st?.id ?? f}`);
      }
    }
    const exists = await tableExists(this.c.name).catch(() => false);
    if (!states.length) {
      if (exists || (await this.bridgeExists())) {
        await this.teardown();
        removed.push(`network ${this.c.name} (table, bridge, route)`);
      }
      return { restored, removed };
    }
    await this.ensureUp();
    for (const st of states) {
      const ip = parseIp(st.address)!;
      const policy = this.check(st.request);
      if (!policy || !this.pool.claim(ip)) continue;
      const sb = new NetSandbox(st.id, ip, st.hostIf, policy, st.request, this.sinkFor(st.id));
      await nft(addSandbox(this.table(), ip, policy));
      this.register(sb);
      const kept = (await this.eventLog?.load(st.id, 0, NETWORK_EVENTS_KEPT).catch(() => [])) ?? [];
      sb.events.seed(kept);
      for (const k of proposed(kept)) sb.reached.set(k, Date.now());
      restored.push(st.id);
    }
    // Bridge ports nobody owns now (a TAP left by a crash).
    const ports = await runTool('ip', ['-o', 'link', 'show', 'master', this.bridge]).catch(() => '');
    for (const m of ports.matchAll(/^\d+: ([^:@]+)/gm)) {
      const name = m[1]!;
      if (![...this.sandboxes.values()].some((s) => s.hostIf === name)) {
        await runTool('ip', ['link', 'del', name]).catch(() => undefined);
        removed.push(`link ${name}`);
      }
    }
    return { restored, removed };
  }

  private async bridgeExists(): Promise<boolean> {
    return runTool('ip', ['link', 'show', this.bridge]).then(
      () => true,
      () => false,
    );
  }

  /** Removes the table, kiln's routing rule and table, and the bridge. */
  private async teardown(): Promise<void> {
    if (await tableExists(this.c.name).catch(() => false)) await nft(`delete table inet ${this.c.name}\n`).catch(() => undefined);
    await runTool('ip', ['-4', 'rule', 'del', 'pref', String(this.c.routeTable)]).catch(() => undefined);
    await runTool('ip', ['-4', 'route', 'flush', 'table', String(this.c.routeTable)]).catch(() => undefined);
    await runTool('ip', ['link', 'del', this.bridge]).catch(() => undefined);
  }

  /**
   * At a stop: `kept` sandboxes keep their network (the next start restores it); with none kept,
   * the bridge, table and routes go too.
   */
  async close(kept: Set<string>): Promise<void> {
    this.kernelLog?.stop();
    this.resolver?.close();
    await this.gate?.close();
    for (const sb of [...this.sandboxes.values()]) if (!kept.has(sb.id)) await this.release(sb);
    if (this.up && ![...this.sandboxes.keys()].some((id) => kept.has(id))) await this.teardown();
    this.up = undefined;
  }

  info(sb: NetSandbox): SandboxNetworkInfo {
    return {
      policy: sb.policy.policy,
      allow: sb.policy.allow,
      learn: sb.policy.learn,
      address: sb.address,
      gateway: this.gateway,
      hostInterface: sb.hostIf,
      bandwidthMbit: sb.policy.bandwidthMbit,
      attachMs: sb.attachMs,
    };
  }

  describe(id: string): SandboxNetworkInfo | undefined {
    const sb = this.sandboxes.get(id);
    return sb ? this.info(sb) : undefined;
  }

  /** The audit trail, counters, and (learn mode or refusals) the allowlist that would let the workload through. */
  async events(id: string, after?: number, limit?: number): Promise<NetworkEventsAnswer | undefined> {
    const sb = this.sandboxes.get(id);
    if (!sb) return undefined;
    const proposal = new Set(sb.policy.allow);
    for (const k of sb.reached.keys()) proposal.add(k);
    return {
      policy: sb.policy.policy,
      events: sb.events.list(after, limit),
      counters: await countersOf(sb),
      proposal: { policy: 'allowlist', allow: [...proposal].sort() },
    };
  }

  /** A gone sandbox's trail from the store: its events, the refusals among them, and the allowlist they propose. */
  async pastEvents(id: string, had: { policy: NetworkPolicyName; allow: string[] }, after = 0, limit = NETWORK_EVENTS_KEPT): Promise<NetworkEventsAnswer> {
    const all = (await this.eventLog?.load(id, 0, NETWORK_EVENTS_KEPT)) ?? [];
    return {
      policy: had.policy,
      events: all.filter((e) => e.seq > after).slice(0, limit),
      counters: { bytesOut: 0, bytesIn: 0, refused: all.filter((e) => e.verdict === 'refused').length },
      proposal: { policy: 'allowlist', allow: [...new Set([...had.allow, ...proposed(all)])].sort() },
    };
  }

  private sinkFor(id: string): ((e: NetworkEvent) => void) | undefined {
    const log = this.eventLog;
    return log ? (e) => log.record(id, e) : undefined;
  }

  /** Per-sandbox counters for /metrics. */
  async counters(): Promise<{ id: string; bytesOut: number; bytesIn: number; refused: number }[]> {
    return Promise.all([...this.sandboxes.values()].map(async (sb) => ({ id: sb.id, ...(await countersOf(sb)) })));
  }

  private onKernelLog(l: KernelLogLine): void {
    const sb = this.byIp.get(l.src);
    if (!sb) return;
    const e = kernelLogEvent(l);
    if (l.dst === this.gateway) e.reason = "the host itself (only kiln's resolver is reachable there)";
    // A redirected DNS query shows up here too when its DNAT raced; the resolver records those.
    sb.events.push(e);
    if (e.verdict !== 'allowed' && l.dst !== this.gateway) {
      const name = [...sb.resolved.entries()].find(([, r]) => r.ips.includes(l.dst))?.[0];
      sb.reached.set(`${name ?? l.dst}${l.dport ? `:${l.dport}` : ''}`, Date.now());
    }
  }

  private resolverClient(ip: string) {
    const sb = this.byIp.get(ip);
    if (!sb) return undefined;
    return {
      decide: (q: Question): 'allow' | 'refuse' | 'empty' => {
        const p = sb.policy;
        const allowed = p.policy === 'open' || p.learn || nameRules(p, q.name).length > 0;
        if (!allowed) return 'refuse';
        return q.type === QTYPE.AAAA ? 'empty' : 'allow';
      },
      admit: async (q: Question, addrs: { ip: string; ttl: number }[]): Promise<void> => {
        const ips = [...new Set(addrs.map((a) => a.ip))];
        const ttl = Math.min(ADMIT_MAX_SEC, Math.max(ADMIT_MIN_SEC, Math.min(...addrs.map((a) => a.ttl))));
        sb.resolved.set(q.name, { ips, until: Date.now() + ttl * 1000 });
        if (sb.policy.policy !== 'allowlist') return;
        const rules = nameRules(sb.policy, q.name);
        if (!rules.length) return; // learn mode: let through, nothing to admit
        const entries: { dest: string; port?: number }[] = [];
        for (const a of ips) {
          if (rules.some((r) => r.port === undefined || r.port === 80 || r.port === 443)) entries.push({ dest: a });
          for (const r of rules) if (r.port !== undefined && r.port !== 80 && r.port !== 443) entries.push({ dest: a, port: r.port });
        }
        await nft(admit(this.table(), sb.ip, entries, ttl));
      },
      record: (q: Question, verdict: 'allowed' | 'refused', d: { addresses?: string[]; reason?: string }) => {
        const learned = verdict === 'allowed' && sb.policy.learn && !nameRules(sb.policy, q.name).length;
        if (verdict === 'refused' || learned) sb.reached.set(q.name, Date.now());
        sb.events.push({
          kind: 'dns',
          verdict: learned ? 'learned' : verdict,
          name: q.name,
          protocol: q.type === QTYPE.A ? 'A' : q.type === QTYPE.AAAA ? 'AAAA' : `type ${q.type}`,
          ...(d.addresses?.length ? { address: d.addresses.join(', ') } : {}),
          ...(d.reason ? { reason: d.reason } : {}),
        });
      },
    };
  }

  private proxyClient(ip: string) {
    const sb = this.byIp.get(ip);
    if (!sb) return undefined;
    return {
      route: async (name: string, port: number): Promise<{ address: string } | { refused: string }> => {
        const n = normaliseName(name);
        if (!nameAllowsWeb(sb.policy, n, port)) {
          sb.reached.set(n, Date.now());
          return { refused: `${port === 443 ? 'TLS server name' : 'HTTP Host'} ${n} is not in the allowlist` };
        }
        let r = sb.resolved.get(n);
        if (!r || r.until < Date.now()) {
          const addrs = (await this.resolver?.lookup(n)) ?? [];
          if (!addrs.length) return { refused: `${n} does not resolve` };
          r = { ips: addrs.map((a) => a.ip), until: Date.now() + ADMIT_MIN_SEC * 1000 };
          sb.resolved.set(n, r);
        }
        const usable = r.ips.filter((a) => !this.shape.deny.some((d) => contains(d, parseIp(a)!)));
        if (!usable.length) return { refused: `${n} resolves only to denied addresses` };
        return { address: usable[0]! };
      },
      record: (verdict: 'allowed' | 'refused', e: { name?: string; address?: string; port: number; reason?: string }) => {
        sb.events.push({ kind: 'connection', verdict, protocol: 'tcp', ...e });
      },
    };
  }
}

/** Bytes each way through the sandbox's host link (its rx is what the sandbox sent) and its refusals. */
async function countersOf(sb: NetSandbox): Promise<{ bytesOut: number; bytesIn: number; refused: number }> {
  const [rx, tx] = await Promise.all(['rx_bytes', 'tx_bytes'].map((f) => readFile(`/sys/class/net/${sb.hostIf}/statistics/${f}`, 'utf8').then(Number, () => 0)));
  return { bytesOut: rx!, bytesIn: tx!, refused: sb.events.refused };
}

async function systemResolvers(): Promise<string[]> {
  const text = await readFile('/etc/resolv.conf', 'utf8').catch(() => '');
  const out = [...text.matchAll(/^nameserver\s+(\d+\.\d+\.\d+\.\d+)/gm)].map((m) => m[1]!).filter((a) => !a.startsWith('127.'));
  if (!out.length) throw new Error('no upstream resolver: /etc/resolv.conf names none usable from the bridge (127.x cannot be); set KILN_NET_DNS');
  return out;
}

/** What kept events propose to allow: what was refused or let through in learn mode (by name where known). */
function proposed(events: NetworkEvent[]): string[] {
  const out = new Set<string>();
  for (const e of events) {
    if (e.verdict === 'allowed' || e.reason?.startsWith('the host itself')) continue;
    const what = e.name ?? e.address;
    if (what) out.add(e.kind === 'connection' && !e.name && e.port ? `${what}:${e.port}` : what);
  }
  return [...out];
}
