/** IPv4 parsing, CIDR membership, the sandbox address pool and MACs (src/net/addr.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPool, contains, formatCidr, formatIp, gatewayOf, macFor, parseCidr, parseIp } from '../../src/net/addr.js';

const ip = (s: string) => {
  const n = parseIp(s);
  assert.notEqual(n, undefined, s);
  return n!;
};

describe('net/addr', () => {
  it('parses dotted quads to unsigned numbers and formats them back', () => {
    assert.equal(parseIp('0.0.0.0'), 0);
    assert.equal(parseIp('255.255.255.255'), 0xffffffff);
    assert.equal(parseIp('10.1.2.3'), 0x0a010203);
    assert.equal(parseIp('198.18.1.12'), (198 * 2 ** 24 + 18 * 2 ** 16 + 256 + 12) >>> 0);
    for (const s of ['1.2.3.4', '255.255.255.255', '0.0.0.0', '192.168.100.1']) assert.equal(formatIp(ip(s)), s);
  });

  it('refuses what is not a dotted-quad IPv4 address', () => {
    for (const s of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.04', 'a.b.c.d', '1.2.3.4 ', '::1', '1.2.3.-4']) assert.equal(parseIp(s), undefined, s);
  });

  it('parses CIDR blocks, clearing host bits; a bare address is a /32', () => {
    assert.deepEqual(parseCidr('198.51.100.7/24'), { net: ip('198.51.100.0'), prefix: 24 });
    assert.deepEqual(parseCidr('198.51.100.7'), { net: ip('198.51.100.7'), prefix: 32 });
    assert.deepEqual(parseCidr('10.0.0.0/0'), { net: 0, prefix: 0 });
    assert.equal(formatCidr(parseCidr('172.16.5.4/12')!), '172.16.0.0/12');
    for (const s of ['1.2.3.4/33', '1.2.3.4/', '1.2.3.4/-1', '1.2.3.4/8/8', '1.2.3.4/x', '300.0.0.0/8', '1.2.3.4/008']) assert.equal(parseCidr(s), undefined, s);
  });

  it('contains: membership at the edges of a block, /0 and /32', () => {
    const c = parseCidr('198.51.100.0/24')!;
    assert.ok(contains(c, ip('198.51.100.0')));
    assert.ok(contains(c, ip('198.51.100.255')));
    assert.ok(!contains(c, ip('198.51.101.0')));
    assert.ok(!contains(c, ip('198.51.99.255')));
    assert.ok(contains(parseCidr('0.0.0.0/0')!, ip('255.255.255.255')));
    assert.ok(contains(parseCidr('9.9.9.9')!, ip('9.9.9.9')));
    assert.ok(!contains(parseCidr('9.9.9.9')!, ip('9.9.9.8')));
    // High addresses (sign bit set) compare as unsigned.
    assert.ok(contains(parseCidr('240.0.0.0/4')!, ip('255.1.2.3')));
  });

  it('gatewayOf: the first host address of a subnet', () => {
    assert.equal(gatewayOf('10.89.0.0/16'), '10.89.0.1');
    assert.equal(gatewayOf('10.89.7.9/24'), '10.89.7.1');
    assert.equal(gatewayOf('nonsense'), undefined);
  });

  it('macFor: a locally administered unicast MAC carrying the address', () => {
    assert.equal(macFor(ip('10.1.2.3')), '02:6b:0a:01:02:03');
    assert.equal(macFor(ip('255.255.0.171')), '02:6b:ff:ff:00:ab');
    const first = Number.parseInt(macFor(ip('1.1.1.1')).slice(0, 2), 16);
    assert.equal(first & 1, 0, 'unicast');
    assert.equal(first & 2, 2, 'locally administered');
  });
});

describe('net/addr AddressPool', () => {
  it('hands out every host address but the gateway and broadcast, then none', () => {
    const pool = new AddressPool(parseCidr('10.9.0.0/29')!);
    assert.equal(formatIp(pool.gateway), '10.9.0.1');
    assert.equal(pool.size, 5);
    const got: string[] = [];
    for (let a = pool.take(); a !== undefined; a = pool.take()) got.push(formatIp(a));
    assert.deepEqual(got, ['10.9.0.2', '10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
    assert.equal(pool.inUse, 5);
    assert.equal(pool.take(), undefined);
    pool.release(ip('10.9.0.4'));
    assert.equal(pool.inUse, 4);
    assert.equal(formatIp(pool.take()!), '10.9.0.4');
    assert.equal(pool.take(), undefined);
  });

  it('does not hand a released address out again at once: it rotates', () => {
    const pool = new AddressPool(parseCidr('10.9.0.0/24')!);
    const a = pool.take()!;
    pool.release(a);
    const b = pool.take()!;
    assert.notEqual(b, a);
    assert.equal(formatIp(b), '10.9.0.3');
  });

  it('claim: takes a given address inside the pool once; never the gateway, broadcast or outside', () => {
    const pool = new AddressPool(parseCidr('10.9.0.0/29')!);
    assert.equal(pool.claim(ip('10.9.0.3')), true);
    assert.equal(pool.claim(ip('10.9.0.3')), false);
    assert.equal(pool.claim(ip('10.9.0.1')), false, 'gateway');
    assert.equal(pool.claim(ip('10.9.0.7')), false, 'broadcast');
    assert.equal(pool.claim(ip('10.9.0.0')), false, 'network');
    assert.equal(pool.claim(ip('10.9.1.3')), false, 'outside');
    const rest: string[] = [];
    for (let a = pool.take(); a !== undefined; a = pool.take()) rest.push(formatIp(a));
    assert.deepEqual(rest, ['10.9.0.2', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
  });

  it('refuses a subnet too small for a gateway and a sandbox', () => {
    assert.throws(() => new AddressPool(parseCidr('10.9.0.0/30')!), /too small/);
  });
});
