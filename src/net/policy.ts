/**
 * A sandbox's network policy: what a create asks for, checked and compiled into the name rules the
 * resolver and the TLS/HTTP proxy apply and the address rules the firewall applies.
 *
 * Allow entries: `example.org` (HTTP and HTTPS to that name), `*.example.org` (any name under it, not
 * the name itself), `example.org:5432` (that port, by the addresses the name resolves to), and
 * `198.51.100.0/24`, `198.51.100.7`, `198.51.100.0/24:443` (addresses, any or one port; no name check).
 */
import { KilnError } from '../core/errors.js';
import type { NetworkPolicyName, NetworkRequest } from '../core/network.js';
import { type Cidr, contains, formatCidr, parseCidr } from './addr.js';

export const NETWORK_POLICIES: readonly NetworkPolicyName[] = ['none', 'allowlist', 'open'];
export const MAX_ALLOW_ENTRIES = 256;
/** Ports whose connections to names go through kiln's proxy, which checks the TLS SNI or HTTP Host. */
export const INSPECTED_PORTS = { http: 80, tls: 443 } as const;

export interface NameRule {
  /** Lower case, no trailing dot; for a wildcard the suffix without "*." */
  name: string;
  wildcard: boolean;
  /** Undefined: HTTP and HTTPS (ports 80 and 443, checked by the proxy). */
  port?: number;
}

export interface CidrRule {
  cidr: Cidr;
  port?: number;
}

export interface CompiledPolicy {
  policy: NetworkPolicyName;
  learn: boolean;
  names: NameRule[];
  cidrs: CidrRule[];
  /** The entries as given (normalised), for GET and the proposal. */
  allow: string[];
  bandwidthMbit: number;
}

const LABEL = /^(?!-)[a-z0-9_-]{1,63}(?<!-)$/;

function bad(message: string, value: unknown): KilnError {
  return new KilnError('INVALID_REQUEST', message, { details: { field: 'network.allow', value } });
}

export function normaliseName(n: string): string {
  return n.toLowerCase().replace(/\.$/, '');
}

function parsePort(raw: string, entry: string): number {
  if (!/^\d{1,5}$/.test(raw) || Number(raw) < 1 || Number(raw) > 65535) throw bad(`network.allow entry "${entry}": the port must be a number from 1 to 65535`, entry);
  return Number(raw);
}

/** One allow entry, or an INVALID_REQUEST naming what is wrong with it. */
export function parseAllowEntry(entry: string): NameRule | CidrRule {
  if (typeof entry !== 'string' || entry.length === 0 || entry.length > 300) throw bad('each network.allow entry is a non-empty string of at most 300 characters', entry);
  const s = entry.trim();
  const colon = s.lastIndexOf(':');
  const host = colon >= 0 ? s.slice(0, colon) : s;
  const port = colon >= 0 ? parsePort(s.slice(colon + 1), entry) : undefined;
  if (/^[\d./]+$/.test(host)) {
    const cidr = parseCidr(host);
    if (!cidr) throw bad(`network.allow entry "${entry}" is not an IPv4 address or CIDR block (e.g. 198.51.100.0/24)`, entry);
    return { cidr, port };
  }
  const wildcard = host.startsWith('*.');
  const name = normaliseName(wildcard ? host.slice(2) : host);
  if (name.includes('*')) throw bad(`network.allow entry "${entry}": a wildcard is only allowed as the first label ("*.example.org")`, entry);
  const labels = name.split('.');
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l)))
    throw bad(`network.allow entry "${entry}" is not a domain name (e.g. example.org, *.example.org, example.org:5432), an IPv4 address or a CIDR block`, entry);
  return { name, wildcard, port };
}

export function formatRule(r: NameRule | CidrRule): string {
  const host = 'cidr' in r ? (r.cidr.prefix === 32 ? formatCidr(r.cidr).slice(0, -3) : formatCidr(r.cidr)) : `${r.wildcard ? '*.' : ''}${r.name}`;
  return r.port === undefined ? host : `${host}:${r.port}`;
}

export interface PolicyLimits {
  allowOpen: boolean;
  defaultBandwidthMbit: number;
  maxBandwidthMbit: number;
}

/** Checks a create's `network` against the operator's limits; the compiled policy the data path applies. */
export function compilePolicy(req: NetworkRequest, limits: PolicyLimits): CompiledPolicy {
  if (!NETWORK_POLICIES.includes(req.policy))
    throw new KilnError('INVALID_REQUEST', `network.policy must be one of ${NETWORK_POLICIES.join(', ')} (got ${JSON.stringify(req.policy)})`, {
      details: { field: 'network.policy', value: req.policy },
    });
  const allow = req.allow ?? [];
  if (req.policy !== 'allowlist' && allow.length) throw bad(`network.allow only applies to the allowlist policy (this sandbox's policy is ${req.policy})`, allow);
  if (req.learn && req.policy !== 'allowlist') throw new KilnError('INVALID_REQUEST', 'network.learn only applies to the allowlist policy', { details: { field: 'network.learn' } });
  if (allow.length > MAX_ALLOW_ENTRIES) throw bad(`network.allow has ${allow.length} entries; at most ${MAX_ALLOW_ENTRIES}`, allow.length);
  if ((req.policy === 'open' || req.learn) && !limits.allowOpen)
    throw new KilnError(
      'NETWORK_FORBIDDEN',
      `the operator does not allow ${req.learn ? 'learn mode (it lets everything through)' : 'the open network policy'} on this service (KILN_NET_ALLOW_OPEN=0); use an allowlist`,
      {
        details: { field: req.learn ? 'network.learn' : 'network.policy' },
      },
    );
  const bw = req.bandwidthMbit ?? 0;
  if (!Number.isFinite(bw) || bw < 0 || bw > limits.maxBandwidthMbit)
    throw new KilnError('INVALID_REQUEST', `network.bandwidthMbit must be from 1 to ${limits.maxBandwidthMbit} (0: the default)`, { details: { field: 'network.bandwidthMbit', value: bw } });
  const names: NameRule[] = [];
  const cidrs: CidrRule[] = [];
  for (const e of allow) {
    const r = parseAllowEntry(e);
    if ('cidr' in r) cidrs.push(r);
    else names.push(r);
  }
  return {
    policy: req.policy,
    learn: !!req.learn,
    names,
    cidrs,
    allow: [...names, ...cidrs].map(formatRule),
    bandwidthMbit: bw || limits.defaultBandwidthMbit,
  };
}

/** Whether `name` (any case, trailing dot or not) is allowed, and for which ports; undefined: not at all. */
export function nameRules(p: CompiledPolicy, name: string): NameRule[] {
  const n = normaliseName(name);
  return p.names.filter((r) => (r.wildcard ? n.endsWith(`.${r.name}`) : n === r.name));
}

/** Whether a name may be reached by HTTP/HTTPS through the proxy (a rule without a port, or port 80/443). */
export function nameAllowsWeb(p: CompiledPolicy, name: string, port: number): boolean {
  return nameRules(p, name).some((r) => r.port === undefined || r.port === port);
}

/** Whether an address is allowed by a CIDR rule (any port, or `port`). */
export function cidrAllows(p: CompiledPolicy, ip: number, port: number): boolean {
  return p.cidrs.some((r) => contains(r.cidr, ip) && (r.port === undefined || r.port === port));
}
