/** Allow entries, wildcard semantics and the operator's limits (src/net/policy.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KilnError } from '../../src/core/errors.js';
import type { NetworkRequest } from '../../src/core/network.js';
import { parseIp } from '../../src/net/addr.js';
import { cidrAllows, compilePolicy, formatRule, nameAllowsWeb, nameRules, type PolicyLimits, parseAllowEntry } from '../../src/net/policy.js';

const LIMITS: PolicyLimits = { allowOpen: true, defaultBandwidthMbit: 100, maxBandwidthMbit: 1000 };
const ip = (s: string) => parseIp(s)!;

function refusedWith(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof KilnError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, message);
    return true;
  });
}

const allowlist = (allow: string[], o: Partial<NetworkRequest> = {}) => compilePolicy({ policy: 'allowlist', allow, ...o }, LIMITS);

describe('net/policy entries', () => {
  it('parses every entry form and formats it back normalised', () => {
    const cases: Array<[string, string]> = [
      ['example.org', 'example.org'],
      ['Example.ORG.', 'example.org'],
      ['*.example.org', '*.example.org'],
      ['example.org:5432', 'example.org:5432'],
      ['*.example.org:8443', '*.example.org:8443'],
      ['198.51.100.0/24', '198.51.100.0/24'],
      ['198.51.100.9/24', '198.51.100.0/24'],
      ['198.51.100.7', '198.51.100.7'],
      ['198.51.100.7:443', '198.51.100.7:443'],
      ['198.51.100.0/24:443', '198.51.100.0/24:443'],
      [' api.example.org ', 'api.example.org'],
      ['my_host.internal-1.example', 'my_host.internal-1.example'],
    ];
    for (const [entry, formatted] of cases) assert.equal(formatRule(parseAllowEntry(entry)), formatted, entry);
    assert.deepEqual(parseAllowEntry('*.Example.org:22'), { name: 'example.org', wildcard: true, port: 22 });
    assert.deepEqual(parseAllowEntry('198.51.100.7:443'), { cidr: { net: ip('198.51.100.7'), prefix: 32 }, port: 443 });
  });

  it('refuses bad entries with INVALID_REQUEST naming the entry', () => {
    const bad: Array<[string, RegExp]> = [
      ['example.org:0', /"example\.org:0": the port must be a number from 1 to 65535/],
      ['example.org:65536', /"example\.org:65536": the port/],
      ['example.org:http', /"example\.org:http": the port/],
      ['example.org:', /"example\.org:": the port/],
      ['198.51.100.0/33', /"198\.51\.100\.0\/33" is not an IPv4 address or CIDR block/],
      ['300.1.1.1', /"300\.1\.1\.1" is not an IPv4 address/],
      ['a.*.example.org', /"a\.\*\.example\.org": a wildcard is only allowed as the first label/],
      ['**.example.org', /"\*\*\.example\.org": a wildcard/],
      ['*', /"\*"/],
      ['localhost', /"localhost" is not a domain name/],
      ['-bad.example.org', /"-bad\.example\.org" is not a domain name/],
      ['exa mple.org', /"exa mple\.org" is not a domain name/],
      ['http://example.org', /"http:\/\/example\.org"/],
      [`${'a'.repeat(64)}.org`, /is not a domain name/],
    ];
    for (const [entry, message] of bad) refusedWith(() => parseAllowEntry(entry), 'INVALID_REQUEST', message);
    refusedWith(() => parseAllowEntry(''), 'INVALID_REQUEST', /non-empty string of at most 300/);
    refusedWith(() => parseAllowEntry(`${'a.'.repeat(151)}org`), 'INVALID_REQUEST', /at most 300/);
    // The whole create is refused by its first bad entry, named.
    refusedWith(() => allowlist(['example.org', 'nope:99999']), 'INVALID_REQUEST', /"nope:99999"/);
  });

  it('a wildcard matches names under it at any depth, not the name itself', () => {
    const p = allowlist(['*.example.org']);
    assert.equal(nameRules(p, 'a.example.org').length, 1);
    assert.equal(nameRules(p, 'a.b.example.org').length, 1);
    assert.equal(nameRules(p, 'A.Example.Org.').length, 1);
    assert.equal(nameRules(p, 'example.org').length, 0);
    assert.equal(nameRules(p, 'badexample.org').length, 0);
    assert.equal(nameRules(p, 'example.org.evil.com').length, 0);
  });

  it('a plain name matches only itself, any case, with or without the trailing dot', () => {
    const p = allowlist(['example.org']);
    assert.equal(nameRules(p, 'EXAMPLE.org.').length, 1);
    assert.equal(nameRules(p, 'www.example.org').length, 0);
    assert.equal(nameRules(p, 'example.org.uk').length, 0);
  });

  it('web access: a name without a port is HTTP and HTTPS; with a port, only that port', () => {
    const p = allowlist(['example.org', 'db.example.org:5432', 'tls.example.net:443']);
    assert.ok(nameAllowsWeb(p, 'example.org', 80));
    assert.ok(nameAllowsWeb(p, 'example.org', 443));
    assert.ok(!nameAllowsWeb(p, 'db.example.org', 443));
    assert.ok(nameAllowsWeb(p, 'tls.example.net', 443));
    assert.ok(!nameAllowsWeb(p, 'tls.example.net', 80));
    assert.ok(!nameAllowsWeb(p, 'other.org', 443));
  });

  it('address rules: any port, or the one given', () => {
    const p = allowlist(['198.51.100.0/24', '203.0.113.7:443']);
    assert.ok(cidrAllows(p, ip('198.51.100.200'), 22));
    assert.ok(!cidrAllows(p, ip('198.51.101.1'), 22));
    assert.ok(cidrAllows(p, ip('203.0.113.7'), 443));
    assert.ok(!cidrAllows(p, ip('203.0.113.7'), 80));
    assert.ok(!cidrAllows(p, ip('203.0.113.8'), 443));
  });
});

describe('net/policy compilePolicy', () => {
  it('compiles names and addresses apart, keeps the normalised list, applies the default bandwidth', () => {
    const p = allowlist(['Example.org', '198.51.100.7/24', '*.pypi.org', 'db.example.org:5432']);
    assert.equal(p.policy, 'allowlist');
    assert.equal(p.learn, false);
    assert.deepEqual(p.allow, ['example.org', '*.pypi.org', 'db.example.org:5432', '198.51.100.0/24']);
    assert.equal(p.names.length, 3);
    assert.equal(p.cidrs.length, 1);
    assert.equal(p.bandwidthMbit, 100);
    assert.equal(allowlist([], { bandwidthMbit: 20 }).bandwidthMbit, 20);
    assert.equal(allowlist([], { bandwidthMbit: 1000 }).bandwidthMbit, 1000);
    assert.equal(compilePolicy({ policy: 'none' }, LIMITS).policy, 'none');
    assert.equal(compilePolicy({ policy: 'open' }, LIMITS).policy, 'open');
  });

  it('refuses an unknown policy, allow or learn outside allowlist, too many entries', () => {
    refusedWith(() => compilePolicy({ policy: 'everything' as 'open' }, LIMITS), 'INVALID_REQUEST', /network\.policy must be one of none, allowlist, open \(got "everything"\)/);
    refusedWith(() => compilePolicy({ policy: 'open', allow: ['example.org'] }, LIMITS), 'INVALID_REQUEST', /only applies to the allowlist policy \(this sandbox's policy is open\)/);
    refusedWith(() => compilePolicy({ policy: 'none', learn: true }, LIMITS), 'INVALID_REQUEST', /network\.learn only applies to the allowlist policy/);
    const many = Array.from({ length: 257 }, (_, i) => `h${i}.example.org`);
    refusedWith(() => allowlist(many), 'INVALID_REQUEST', /257 entries; at most 256/);
    assert.equal(allowlist(many.slice(0, 256)).names.length, 256);
  });

  it('open and learn are NETWORK_FORBIDDEN when the operator does not allow them', () => {
    const strict = { ...LIMITS, allowOpen: false };
    refusedWith(() => compilePolicy({ policy: 'open' }, strict), 'NETWORK_FORBIDDEN', /does not allow the open network policy.*use an allowlist/);
    refusedWith(() => compilePolicy({ policy: 'allowlist', learn: true }, strict), 'NETWORK_FORBIDDEN', /does not allow learn mode/);
    assert.equal(compilePolicy({ policy: 'allowlist', allow: ['example.org'] }, strict).policy, 'allowlist');
    assert.equal(compilePolicy({ policy: 'allowlist', learn: true }, LIMITS).learn, true);
  });

  it('bandwidth: 0 is the default, negative, above the maximum or not finite is refused', () => {
    assert.equal(allowlist([], { bandwidthMbit: 0 }).bandwidthMbit, 100);
    for (const bw of [-1, 1001, Number.NaN, Number.POSITIVE_INFINITY]) refusedWith(() => allowlist([], { bandwidthMbit: bw }), 'INVALID_REQUEST', /network\.bandwidthMbit must be from 1 to 1000/);
  });
});
