/**
 * kiln's nftables scripts (src/net/nft.ts), checked by nftables itself: `nft -c -f -` parses and
 * validates a transaction in the kernel without applying it (needs root and nf_tables).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { parseCidr, parseIp } from '../../src/net/addr.js';
import { addSandbox, admit, baseRuleset, LOG, removeSandbox, SEND_BURST_BYTES, sandboxTag, type TableShape } from '../../src/net/nft.js';
import { compilePolicy, type PolicyLimits } from '../../src/net/policy.js';

const LIMITS: PolicyLimits = { allowOpen: true, defaultBandwidthMbit: 0, maxBandwidthMbit: 10_000 };
const SHAPE: TableShape = {
  table: 'kiln_unit_check',
  bridge: 'kt1234',
  uplink: 'eth0',
  subnet: parseCidr('10.89.0.0/16')!,
  gateway: parseIp('10.89.0.1')!,
  deny: ['10.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10'].map((c) => parseCidr(c)!),
  dnsPort: 5353,
  tlsPort: 8443,
  httpPort: 8080,
};
const A = parseIp('10.89.0.2')!;
const B = parseIp('10.89.0.3')!;
const C = parseIp('10.89.0.4')!;

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'nft -c needs root';
  const probe = spawnSync('nft', ['-c', '-f', '-'], { input: 'add table inet kiln_unit_probe\n', encoding: 'utf8' });
  if (probe.error) return `no nft: ${probe.error.message}`;
  if (probe.status !== 0) return `nft -c does not work here: ${probe.stderr.trim()}`;
  return undefined;
}

/** nft's verdict on a script, without applying it. */
function check(script: string): { ok: boolean; stderr: string } {
  const r = spawnSync('nft', ['-c', '-f', '-'], { input: script, encoding: 'utf8' });
  return { ok: r.status === 0, stderr: r.stderr };
}

function assertValid(script: string): void {
  const r = check(script);
  assert.ok(r.ok, `nft -c refused:\n${r.stderr}\n--- script ---\n${script}`);
}

describe('net/nft scripts, validated by nft -c', { skip: skipReason() }, () => {
  const allowlist = compilePolicy({ policy: 'allowlist', allow: ['pypi.org', '*.pythonhosted.org', 'db.example.org:5432', '198.51.100.0/24', '203.0.113.7:443', '192.0.2.0/24:22'] }, LIMITS);
  const learn = compilePolicy({ policy: 'allowlist', allow: ['pypi.org'], learn: true }, LIMITS);
  const open = compilePolicy({ policy: 'open' }, LIMITS);

  it('the base table, three sandboxes (allowlist, learn, open), admissions and a removal, as one transaction', () => {
    const script = [
      baseRuleset(SHAPE, false),
      addSandbox(SHAPE, A, allowlist),
      addSandbox(SHAPE, B, learn),
      addSandbox(SHAPE, C, open),
      admit(SHAPE, A, [{ dest: '151.101.0.223' }, { dest: '151.101.64.223' }, { dest: '192.0.2.80', port: 5432 }], 60),
      removeSandbox(SHAPE, B),
      removeSandbox(SHAPE, C),
    ].join('');
    assertValid(script);
  });

  it('a base table with an empty deny list is valid too', () => {
    assertValid(baseRuleset({ ...SHAPE, deny: [] }, false));
  });

  it('the check is real: a sandbox rule for a table that does not exist is refused', () => {
    assert.equal(check(addSandbox({ ...SHAPE, table: 'kiln_unit_absent' }, A, allowlist)).ok, false);
    assert.equal(check(`${baseRuleset(SHAPE, false)}add rule inet ${SHAPE.table} egress jump no_such_chain\n`).ok, false);
  });

  it('refused packets are logged with the table prefix audit.ts reads back, and answered', () => {
    const base = baseRuleset(SHAPE, false);
    for (const why of [LOG.refused, LOG.deny, LOG.host]) assert.match(base, new RegExp(`log prefix "${SHAPE.table}:${why} " reject`));
    const a = addSandbox(SHAPE, A, allowlist);
    assert.match(a, new RegExp(`log prefix "${SHAPE.table}:${LOG.allowed} " accept`));
    assert.doesNotMatch(a, new RegExp(`${SHAPE.table}:${LOG.learned} `));
    assert.match(addSandbox(SHAPE, B, learn), new RegExp(`log prefix "${SHAPE.table}:${LOG.learned} " accept`));
  });

  it('names the per-sandbox chains and sets by the address in hex, and removes them all', () => {
    const tag = sandboxTag(A);
    assert.equal(tag, '0a590002');
    const add = addSandbox(SHAPE, A, allowlist);
    const remove = removeSandbox(SHAPE, A);
    for (const obj of [
      `chain inet ${SHAPE.table} e_${tag}`,
      `chain inet ${SHAPE.table} n_${tag}`,
      `chain inet ${SHAPE.table} s_${tag}`,
      `set inet ${SHAPE.table} w_${tag}`,
      `set inet ${SHAPE.table} p_${tag}`,
    ]) {
      assert.ok(add.includes(`add ${obj}`), obj);
      assert.ok(remove.includes(`delete ${obj}`), obj);
    }
  });

  it('bandwidthMbit polices what the sandbox sends (before routing, so traffic to the gate too); no limit, no policer', () => {
    const limited = compilePolicy({ policy: 'allowlist', allow: ['pypi.org'], bandwidthMbit: 4 }, LIMITS);
    const tag = sandboxTag(A);
    const base = baseRuleset(SHAPE, false);
    assert.match(base, /add chain inet \S+ prerouting_filter \{ type filter hook prerouting priority filter; policy accept; \}/);
    assert.ok(base.includes(`add rule inet ${SHAPE.table} prerouting_filter iifname "${SHAPE.bridge}" ip saddr vmap @send_by_sandbox`));
    const add = addSandbox(SHAPE, A, limited);
    assert.ok(add.includes(`add rule inet ${SHAPE.table} s_${tag} limit rate over 500000 bytes/second burst ${SEND_BURST_BYTES} bytes counter drop`), add);
    assert.ok(add.includes(`add element inet ${SHAPE.table} send_by_sandbox { 10.89.0.2 : jump s_${tag} }`));
    assert.doesNotMatch(addSandbox(SHAPE, B, allowlist), /limit rate/);
    assertValid([base, add, addSandbox(SHAPE, B, allowlist), removeSandbox(SHAPE, A), removeSandbox(SHAPE, B)].join(''));
    // The check is real: nft refuses a policer it cannot parse.
    assert.equal(check(`${base}${add.replace('bytes/second', 'bytes/fortnight')}`).ok, false);
  });

  it('replacing an existing table deletes it first in the same transaction', () => {
    const again = baseRuleset(SHAPE, true);
    assert.match(again, new RegExp(`^delete table inet ${SHAPE.table}\nadd table`));
    assertValid(`${baseRuleset(SHAPE, false)}${again}`);
  });

  it('DNS over UDP and TCP to any server is redirected to the resolver, whose port takes both from the bridge', () => {
    const base = baseRuleset(SHAPE, false);
    assert.match(base, /prerouting_nat iifname "kt1234" meta l4proto \{ tcp, udp \} th dport 53 dnat ip to 10\.89\.0\.1:5353/);
    assert.match(base, /input_filter iifname "kt1234" ip daddr 10\.89\.0\.1 udp dport 5353 accept/);
    assert.match(base, /input_filter iifname "kt1234" ip daddr 10\.89\.0\.1 tcp dport \{ 5353, 8443, 8080 \} accept/);
  });
});
