/**
 * The network audit trail of each sandbox: every DNS query and every connection attempt, allowed or
 * refused, in a bounded ring (the newest NETWORK_EVENTS_KEPT), plus what learn mode saw.
 *
 * Connections that the firewall decides (refused, or allowed by address) are read back from the
 * kernel log, where kiln's rules write them with their table's prefix (`dmesg --follow-new`);
 * DNS queries and proxied HTTP/TLS connections are recorded by the resolver and the proxy.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NETWORK_EVENTS_KEPT, type NetworkEvent } from '../core/network.js';
import { LOG } from './nft.js';

export { NETWORK_EVENTS_KEPT };

export class EventRing {
  private items: NetworkEvent[] = [];
  private seq = 0;
  refused = 0;

  /** `sink` gets each event as it is pushed (the store's copy, see NetworkEventLog). */
  constructor(private readonly sink?: (e: NetworkEvent) => void) {}

  push(e: Omit<NetworkEvent, 'seq' | 'at'>): NetworkEvent {
    const ev = { seq: ++this.seq, at: new Date().toISOString(), ...e };
    this.items.push(ev);
    if (this.items.length > NETWORK_EVENTS_KEPT) this.items.splice(0, this.items.length - NETWORK_EVENTS_KEPT);
    if (ev.verdict === 'refused') this.refused++;
    this.sink?.(ev);
    return ev;
  }

  /** Takes up a kept trail (after a restart of the service): its events come first, seq goes on from them. */
  seed(kept: NetworkEvent[]): void {
    this.items = [...kept, ...this.items].slice(-NETWORK_EVENTS_KEPT);
    this.seq = Math.max(this.seq, ...kept.map((e) => e.seq));
    this.refused += kept.filter((e) => e.verdict === 'refused').length;
  }

  /** Events after `after` (a seq), oldest first, at most `limit`. */
  list(after = 0, limit = NETWORK_EVENTS_KEPT): NetworkEvent[] {
    return this.items.filter((e) => e.seq > after).slice(0, limit);
  }
}

export interface KernelLogLine {
  why: string;
  src: string;
  dst: string;
  proto: string;
  dport?: number;
}

const REASONS: Record<string, { verdict: NetworkEvent['verdict']; reason: string }> = {
  [LOG.refused]: { verdict: 'refused', reason: 'not in the allowlist' },
  [LOG.deny]: { verdict: 'refused', reason: "the operator's deny list (host, link-local and metadata addresses, other networks)" },
  [LOG.host]: { verdict: 'refused', reason: "the host itself (only kiln's resolver is reachable there)" },
  [LOG.allowed]: { verdict: 'allowed', reason: 'allowed by address' },
  [LOG.learned]: { verdict: 'learned', reason: 'not in the allowlist; let through in learn mode' },
};

/** One kernel log line of `table`'s rules, or undefined for anything else. */
export function parseKernelLog(table: string, line: string): KernelLogLine | undefined {
  const i = line.indexOf(`${table}:`);
  if (i < 0) return undefined;
  const why = line.slice(i + table.length + 1).split(' ', 1)[0]!;
  const field = (k: string): string | undefined => new RegExp(`(?:^| )${k}=(\\S+)`).exec(line)?.[1];
  const src = field('SRC');
  const dst = field('DST');
  if (!src || !dst || !REASONS[why]) return undefined;
  const dport = field('DPT');
  return { why, src, dst, proto: (field('PROTO') ?? '?').toLowerCase(), dport: dport ? Number(dport) : undefined };
}

export function kernelLogEvent(l: KernelLogLine): Omit<NetworkEvent, 'seq' | 'at'> {
  const r = REASONS[l.why]!;
  return { kind: 'connection', verdict: r.verdict, address: l.dst, port: l.dport, protocol: l.proto, reason: r.reason };
}

/** Follows the kernel log for `table`'s lines until stop(). */
export class KernelLogFollower {
  private child: ChildProcess | undefined;

  constructor(
    private readonly table: string,
    private readonly onLine: (l: KernelLogLine) => void,
    private readonly log?: (msg: string, data: Record<string, unknown>) => void,
  ) {}

  start(): void {
    if (this.child) return;
    const child = spawn('dmesg', ['--follow-new', '--kernel', '--notime'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.on('error', (e) => this.log?.('network audit: cannot follow the kernel log', { error: e.message }));
    child.stderr!.on('data', (c: Buffer) => this.log?.('network audit: dmesg', { error: c.toString().trim() }));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const l = parseKernelLog(this.table, line);
      if (l) this.onLine(l);
    });
    child.on('exit', () => {
      if (this.child === child) this.child = undefined;
    });
  }

  stop(): void {
    this.child?.kill();
    this.child = undefined;
  }
}
