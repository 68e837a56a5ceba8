/** The network parts of `kiln sandbox`: create's --network flags and `kiln sandbox network <id>`. */
import type { CreateSandboxOptions, KilnClient, NetworkEvent, NetworkEvents, SandboxInfo } from '../../sdk/src/index.js';
import { UsageError } from './command.js';
import { table } from './table.js';

const POLICIES = ['none', 'allowlist', 'open'] as const;
type NetworkOption = NonNullable<CreateSandboxOptions['network']>;

/** Takes every `--name V` / `--name=V` out of argv (parseFlags keeps only the last of a repeated flag). */
export function takeRepeated(argv: string[], name: string): { values: string[]; rest: string[] } {
  const values: string[] = [];
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      rest.push(...argv.slice(i));
      break;
    }
    if (a === `--${name}`) {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      values.push(v);
    } else if (a.startsWith(`--${name}=`)) values.push(a.slice(name.length + 3));
    else rest.push(a);
  }
  return { values, rest };
}

/**
 * The create body's `network` from --network, --allow (repeated), --learn and --bandwidth-mbit;
 * undefined when none is given (the service's default). The entries themselves are checked by the service.
 */
export function networkOption(flags: Record<string, string | boolean>, allow: string[]): NetworkOption | undefined {
  const policy = flags.network;
  const learn = flags.learn === true;
  const bw = flags['bandwidth-mbit'];
  if (policy === undefined) {
    if (allow.length || learn || bw !== undefined) throw new UsageError('--allow, --learn and --bandwidth-mbit need --network allowlist (or --network open for --bandwidth-mbit)');
    return undefined;
  }
  if (!(POLICIES as readonly unknown[]).includes(policy)) throw new UsageError(`--network ${String(policy)}: use one of ${POLICIES.join(', ')}`);
  const o: NetworkOption = { policy: policy as NetworkOption['policy'] };
  if (allow.length || learn) {
    if (o.policy !== 'allowlist') throw new UsageError(`--allow and --learn only apply to --network allowlist (not ${o.policy})`);
    if (allow.some((e) => !e.trim())) throw new UsageError('--allow needs an entry (example.org, *.example.org, example.org:5432, 198.51.100.0/24)');
    if (allow.length) o.allow = allow.map((e) => e.trim());
    if (learn) o.learn = true;
  }
  if (bw !== undefined) {
    if (!/^\d+$/.test(String(bw))) throw new UsageError(`--bandwidth-mbit ${String(bw)}: a whole number of megabits per second (0: the service's default)`);
    if (o.policy === 'none') throw new UsageError('--bandwidth-mbit does not apply to --network none');
    o.bandwidthMbit = Number(bw);
  }
  return o;
}

/** "allowlist 10.89.0.2" (or "allowlist+learn …") for ls and create; "none" without a network. */
export function networkSummary(sb: SandboxInfo): string {
  const n = sb.network;
  if (!n || n.policy === 'none') return 'none';
  return `${n.policy}${n.learn ? '+learn' : ''} ${n.address}`;
}

function where(e: NetworkEvent): string {
  if (!e.address) return '';
  return e.port === undefined ? e.address : `${e.address}:${e.port}`;
}

/** The events as table rows (header first), oldest first. */
export function eventRows(events: NetworkEvent[], header = true): string[][] {
  const rows = events.map((e) => [e.at.replace('T', ' ').replace(/\.\d+Z$/, 'Z'), e.kind, e.verdict === 'refused' ? 'REFUSED' : e.verdict, e.name ?? '', where(e), e.reason ?? '']);
  return header ? [['TIME', 'KIND', 'VERDICT', 'NAME', 'ADDRESS', 'REASON'], ...rows] : rows;
}

export function summaryLines(n: NetworkEvents): string[] {
  return [
    `policy ${n.policy}: ${n.counters.bytesOut} bytes out, ${n.counters.bytesIn} bytes in, ${n.counters.refused} refused`,
    `proposed allowlist: ${n.proposal.allow.length ? n.proposal.allow.join(' ') : '(empty)'}`,
    n.proposal.allow.length ? `  kiln sandbox create <pack> --network allowlist ${n.proposal.allow.map((a) => `--allow '${a}'`).join(' ')}` : '',
  ].filter(Boolean);
}

/** `kiln sandbox network <id> [--follow] [--json]`: prints the trail; with follow, polls `after=` until interrupted. */
export async function showNetwork(kiln: KilnClient, id: string, o: { follow: boolean; json: boolean; intervalMs?: number; signal?: AbortSignal }): Promise<number> {
  let last = 0;
  let first = true;
  for (;;) {
    const n = await kiln.sandboxes.networkEvents(id, { after: last || undefined }, o.signal);
    if (o.json) {
      if (o.follow) for (const e of n.events) console.log(JSON.stringify(e));
      else console.log(JSON.stringify(n, null, 2));
    } else if (n.events.length || first) {
      const rows = eventRows(n.events, first);
      if (rows.length) console.log(table(rows));
      if (!o.follow) for (const l of summaryLines(n)) console.log(l);
    }
    last = n.events.at(-1)?.seq ?? last;
    first = false;
    if (!o.follow) return 0;
    await new Promise<void>((r) => setTimeout(r, o.intervalMs ?? 1000));
    if (o.signal?.aborted) return 0;
  }
}
