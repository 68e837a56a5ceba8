/**
 * Sandbox networking on the namespace backend, end to end through the HTTP API, against a test
 * "internet" inside this machine (test/net/fake-internet.ts): no packet leaves the machine.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { KilnClient } from '../../sdk/src/index.js';
import { DNS, type FakeInternet, leftovers, NAMES, RAW_ALLOWED, RAW_REFUSED, startFakeInternet } from '../net/fake-internet.js';
import { probe } from '../net/probe.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';

const FAST_MS = 3000; // a refusal answers at once (reset, ICMP, NXDOMAIN), far below any timeout

describe('sandbox networking (namespace)', { timeout: 300_000 }, () => {
  let net: FakeInternet;
  let t: TestServer;
  let client: KilnClient;
  let env: Record<string, string>;

  before(async () => {
    net = await startFakeInternet();
    env = net.env();
    t = await startTestServer(env);
    client = t.client;
  });
  after(async () => {
    await t?.close();
    await net?.close();
  });

  it('none reaches nothing, and fails fast', async () => {
    const sb = await client.sandboxes.create({ pack: 'python' });
    try {
      assert.equal(sb.network, undefined);
      const [dns, http, tcp] = await probe(client, sb.id, [
        { kind: 'dns', name: 'allowed.example' },
        { kind: 'http', url: `http://${NAMES['allowed.example']}/` },
        { kind: 'tcp', host: DNS, port: 53 },
      ]);
      for (const r of [dns, http, tcp]) {
        assert.equal(r!.ok, false, r!.out);
        assert.ok(r!.ms < FAST_MS, `took ${r!.ms} ms: ${r!.out}`);
      }
    } finally {
      await client.sandboxes.delete(sb.id);
    }
  });

  it('allowlist reaches allowed names only, by name, and audits every attempt', async () => {
    const other = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: [] } });
    const sb = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: ['allowed.example', '*.wild.example', 'port.example:5432', `${RAW_ALLOWED}/32`] } });
    try {
      assert.equal(sb.network?.policy, 'allowlist');
      assert.deepEqual(sb.network?.allow, ['allowed.example', '*.wild.example', 'port.example:5432', RAW_ALLOWED]);
      const gw = sb.network!.gateway;
      const kilnPort = new URL(t.server.url).port;
      const r = await probe(
        client,
        sb.id,
        [
          { kind: 'http', url: 'http://allowed.example/x?y=1' }, // 0
          { kind: 'http', url: 'https://allowed.example/', ca: true }, // 1
          { kind: 'http', url: 'http://sub.wild.example/' }, // 2
          { kind: 'tcp', host: 'port.example', port: 5432 }, // 3
          { kind: 'http', url: `http://${RAW_ALLOWED}/` }, // 4
          { kind: 'dns', name: 'unlisted.example' }, // 5
          { kind: 'host', ip: NAMES['allowed.example'], host: 'other.example' }, // 6: allowed address, unlisted Host
          { kind: 'tls', ip: NAMES['allowed.example'], sni: 'other.example' }, // 7: allowed address, unlisted SNI
          { kind: 'http', url: `http://${RAW_REFUSED}/` }, // 8: raw IP outside the CIDRs
          { kind: 'tcp', host: gw, port: Number(kilnPort) }, // 9: the host, at the service's port
          { kind: 'tcp', host: '198.18.0.1', port: 22 }, // 10: the host's uplink address
          { kind: 'tcp', host: other.network!.address, port: 8080 }, // 11: another sandbox
          { kind: 'http', url: 'http://169.254.169.254/latest/meta-data/' }, // 12: metadata
          { kind: 'tcp', host: 'port.example', port: 80 }, // 13: port.example only on 5432 -> its address is admitted for 5432 only
          { kind: 'tls', ip: NAMES['allowed.example'], sni: 'allowed.example' }, // 14: the right SNI to the address
        ],
        net.caPem,
      );
      assert.match(r[0]!.out, /^host=allowed\.example sni=- at=198\.18\.1\.10 path=\/x\?y=1/, r[0]!.out);
      assert.match(r[1]!.out, /^host=allowed\.example sni=allowed\.example at=198\.18\.1\.10/, r[1]!.out);
      assert.match(r[2]!.out, /^host=sub\.wild\.example/, r[2]!.out);
      assert.equal(r[3]!.out, 'connected');
      assert.match(r[4]!.out, /at=198\.18\.1\.13/, r[4]!.out);
      assert.match(r[14]!.out, /sni=allowed\.example/, r[14]!.out);
      for (const i of [5, 6, 7, 8, 9, 10, 11, 12, 13]) {
        assert.equal(r[i]!.ok, false, `probe ${i} should be refused: ${r[i]!.out}`);
        assert.ok(r[i]!.ms < FAST_MS, `probe ${i} took ${r[i]!.ms} ms: ${r[i]!.out}`);
      }
      assert.match(r[5]!.out, /Name or service not known|No address/, r[5]!.out);

      // The audit trail has each attempt (kernel-logged ones arrive a moment later).
      const want: Array<[string, (e: { kind: string; verdict: string; name?: string; address?: string; port?: number }) => boolean]> = [
        ['dns allowed.example allowed', (e) => e.kind === 'dns' && e.name === 'allowed.example' && e.verdict === 'allowed'],
        ['dns unlisted.example refused', (e) => e.kind === 'dns' && e.name === 'unlisted.example' && e.verdict === 'refused'],
        ['http Host other.example refused', (e) => e.kind === 'connection' && e.name === 'other.example' && e.port === 80 && e.verdict === 'refused'],
        ['tls SNI other.example refused', (e) => e.kind === 'connection' && e.name === 'other.example' && e.port === 443 && e.verdict === 'refused'],
        ['https allowed.example allowed', (e) => e.kind === 'connection' && e.name === 'allowed.example' && e.port === 443 && e.verdict === 'allowed'],
        ['raw IP refused', (e) => e.kind === 'connection' && e.address === RAW_REFUSED && e.verdict === 'refused'],
        ['raw IP in CIDR allowed', (e) => e.kind === 'connection' && e.address === RAW_ALLOWED && e.verdict === 'allowed'],
        ['host refused', (e) => e.kind === 'connection' && e.address === gw && e.verdict === 'refused'],
        ['host uplink address refused', (e) => e.kind === 'connection' && e.address === '198.18.0.1' && e.verdict === 'refused'],
        ['other sandbox refused', (e) => e.kind === 'connection' && e.address === other.network!.address && e.verdict === 'refused'],
        ['metadata refused', (e) => e.kind === 'connection' && e.address === '169.254.169.254' && e.verdict === 'refused'],
        ['name:port allowed', (e) => e.kind === 'connection' && e.address === NAMES['port.example'] && e.port === 5432 && e.verdict === 'allowed'],
      ];
      let missing: string[] = [];
      for (let i = 0; i < 50; i++) {
        const ev = await client.sandboxes.networkEvents(sb.id);
        missing = want.filter(([, f]) => !ev.events.some(f)).map(([n]) => n);
        if (!missing.length) {
          assert.ok(ev.counters.refused >= 9, `refused counter ${ev.counters.refused}`);
          assert.ok(ev.counters.bytesOut > 0 && ev.counters.bytesIn > 0);
          assert.ok(ev.proposal.allow.includes('unlisted.example'), ev.proposal.allow.join(' '));
          break;
        }
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.deepEqual(missing, [], JSON.stringify((await client.sandboxes.networkEvents(sb.id)).events, null, 1));
    } finally {
      await client.sandboxes.delete(sb.id);
      await client.sandboxes.delete(other.id);
    }
  });

  it("DNS over TCP: redirected to kiln's resolver whatever server is named, same answers and audit as UDP", async () => {
    const sb = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: ['allowed.example'] } });
    try {
      const gw = sb.network!.gateway;
      // Two queries on one connection, to the upstream's own address (redirected) and to the gateway.
      const r = await probe(client, sb.id, [
        { kind: 'dnstcp', server: DNS, names: ['allowed.example', 'unlisted.example'] },
        { kind: 'dnstcp', server: gw, names: ['unlisted2.example', 'allowed.example'] },
      ]);
      assert.equal(r[0]!.out, `allowed.example:0:${NAMES['allowed.example']} unlisted.example:3:`, r[0]!.out);
      assert.equal(r[1]!.out, `unlisted2.example:3: allowed.example:0:${NAMES['allowed.example']}`, r[1]!.out);
      for (const x of r) assert.ok(x.ms < FAST_MS, `took ${x.ms} ms`);
      // The admitted address works for the connection that follows, as after a UDP lookup.
      const [web] = await probe(client, sb.id, [{ kind: 'host', ip: NAMES['allowed.example']!, host: 'allowed.example' }]);
      assert.match(web!.out, /host=allowed\.example/, web!.out);
      const ev = (await client.sandboxes.networkEvents(sb.id)).events.filter((e) => e.kind === 'dns');
      const dns = ev.map((e) => `${e.name} ${e.verdict} ${e.address ?? ''}`.trim());
      assert.deepEqual(dns, [`allowed.example allowed ${NAMES['allowed.example']}`, 'unlisted.example refused', 'unlisted2.example refused', `allowed.example allowed ${NAMES['allowed.example']}`]);
    } finally {
      await client.sandboxes.delete(sb.id);
    }
  });

  it('learn mode lets through, records, and proposes the allowlist', async () => {
    const sb = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: ['allowed.example'], learn: true } });
    try {
      const r = await probe(client, sb.id, [
        { kind: 'http', url: 'http://unlisted.example/' },
        { kind: 'http', url: `http://${RAW_REFUSED}/` },
      ]);
      assert.match(r[0]!.out, /host=unlisted\.example/, r[0]!.out);
      assert.match(r[1]!.out, /at=198\.18\.1\.12/, r[1]!.out);
      let allow: string[] = [];
      for (let i = 0; i < 50 && !allow.includes(`${RAW_REFUSED}:80`); i++) {
        allow = (await client.sandboxes.networkEvents(sb.id)).proposal.allow;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.ok(allow.includes('allowed.example') && allow.includes('unlisted.example') && allow.includes(`${RAW_REFUSED}:80`), allow.join(' '));
    } finally {
      await client.sandboxes.delete(sb.id);
    }
  });

  it('bandwidthMbit limits what a sandbox downloads and uploads', async () => {
    const sb = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: ['allowed.example'], bandwidthMbit: 8 } });
    try {
      assert.equal(sb.network?.bandwidthMbit, 8);
      const qdiscs = (await import('node:child_process')).execFileSync('tc', ['qdisc', 'show', 'dev', sb.network!.hostInterface], { encoding: 'utf8' });
      assert.match(qdiscs, /tbf .*rate 8Mbit/, qdiscs);
      // 3 MB each way at 8 Mbit/s (1 MB/s) takes about 3 s; the limit holds if it is not much faster.
      const script = [
        'import time, urllib.request',
        't = time.monotonic(); n = len(urllib.request.urlopen("http://allowed.example/bytes/3000000", timeout=60).read()); down = time.monotonic() - t',
        't = time.monotonic(); urllib.request.urlopen(urllib.request.Request("http://allowed.example/up", data=b"x" * 3000000), timeout=60).read(); up = time.monotonic() - t',
        'print(n, down, up)',
      ].join('\n');
      await client.sandboxes.writeFile(sb.id, '/tmp/bw.py', script);
      const r = await client.sandboxes.exec(sb.id, { cmd: ['python3', '/tmp/bw.py'], timeoutMs: 120_000 });
      assert.equal(r.exitCode, 0, r.stderr);
      const [n, down, up] = r.stdout.trim().split(' ').map(Number);
      assert.equal(n, 3_000_000);
      const mbit = (s: number) => (3_000_000 * 8) / s / 1e6;
      assert.ok(mbit(down!) < 12, `download at ${mbit(down!).toFixed(1)} Mbit/s`);
      assert.ok(mbit(up!) < 12, `upload at ${mbit(up!).toFixed(1)} Mbit/s`);
    } finally {
      await client.sandboxes.delete(sb.id);
    }
  });

  it('a paused sandbox gives its address back; the resumed one has its network again', async () => {
    const sb = await client.sandboxes.create({ pack: 'python', network: { policy: 'allowlist', allow: ['allowed.example'] } });
    try {
      await client.sandboxes.pause(sb.id);
      const links = (await import('node:child_process')).execFileSync('ip', ['-o', 'link', 'show', 'master', `${env.KILN_NET_NAME}0`], { encoding: 'utf8' });
      assert.doesNotMatch(links, new RegExp(sb.network!.hostInterface));
      const back = await client.sandboxes.resume(sb.id);
      assert.equal(back.network?.policy, 'allowlist');
      const [ok, refused] = await probe(client, sb.id, [
        { kind: 'http', url: 'http://allowed.example/' },
        { kind: 'dns', name: 'unlisted.example' },
      ]);
      assert.match(ok!.out, /host=allowed\.example/, ok!.out);
      assert.equal(refused!.ok, false);
    } finally {
      await client.sandboxes.delete(sb.id);
    }
  });

  it('refuses a bad policy with a clear 400 before creating anything', async () => {
    for (const [network, re] of [
      [{ policy: 'allowlist', allow: ['exa mple.org'] }, /not a domain name/],
      [{ policy: 'allowlist', allow: ['10.0.0.0/33'] }, /not an IPv4 address or CIDR/],
      [{ policy: 'allowlist', allow: ['example.org:99999'] }, /port must be/],
      [{ policy: 'none', allow: ['example.org'] }, /only applies to the allowlist policy/],
      [{ policy: 'open', learn: true }, /only applies to the allowlist policy/],
    ] as const) {
      await assert.rejects(client.sandboxes.create({ pack: 'python', network: network as never }), (e: Error & { status?: number }) => {
        assert.equal(e.status, 400);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.equal((await client.sandboxes.list()).length, 0);
  });

  it('200 networked sandboxes created and destroyed leave nothing behind', async () => {
    for (let i = 0; i < 200; i += 4) {
      const made = await Promise.all([0, 1, 2, 3].map(() => client.sandboxes.create({ pack: 'shell', network: { policy: 'allowlist', allow: ['allowed.example'] } })));
      await Promise.all(made.map((s) => client.sandboxes.delete(s.id)));
    }
    const links = (await import('node:child_process')).execFileSync('ip', ['-o', 'link', 'show', 'master', `${env.KILN_NET_NAME}0`], { encoding: 'utf8' });
    assert.equal(links.trim(), '', links);
    const table = (await import('node:child_process')).execFileSync('nft', ['list', 'table', 'inet', env.KILN_NET_NAME!], { encoding: 'utf8' });
    assert.doesNotMatch(table, /chain e_|set w_/, table);
  });

  it('a service stop removes the bridge, table and routing rule', async () => {
    await t.close();
    assert.deepEqual(leftovers(env.KILN_NET_NAME!, env.KILN_NET_SUBNET!), []);
    t = await startTestServer(env);
    client = t.client;
  });
});
