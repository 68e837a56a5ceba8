/**
 * The allowlist parity cases on a qemu microVM (TAP on kiln's bridge, guest configured by
 * net.config), through the HTTP API, against the test internet of test/net/fake-internet.ts.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DNS, type FakeInternet, leftovers, NAMES, RAW_ALLOWED, RAW_REFUSED, startFakeInternet } from '../net/fake-internet.js';
import { probe } from '../net/probe.js';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { skipReason } from './fixture.js';

describe('sandbox networking (qemu)', { skip: await skipReason(), timeout: 400_000 }, () => {
  let net: FakeInternet;
  let t: TestServer;
  let env: Record<string, string>;
  before(async () => {
    net = await startFakeInternet();
    env = net.env();
    t = await startTestServer(env);
  });
  after(async () => {
    await t?.close();
    await net?.close();
    if (env) assert.deepEqual(leftovers(env.KILN_NET_NAME!, env.KILN_NET_SUBNET!), []);
  });

  it('none reaches nothing; allowlist reaches allowed names only, by name; every attempt is audited', async () => {
    const client = t.client;
    const none = await client.sandboxes.create({ pack: 'python', backend: 'qemu' });
    const sb = await client.sandboxes.create({ pack: 'python', backend: 'qemu', network: { policy: 'allowlist', allow: ['allowed.example', `${RAW_ALLOWED}/32`] } });
    try {
      const [n1, n2] = await probe(client, none.id, [
        { kind: 'dns', name: 'allowed.example' },
        { kind: 'tcp', host: DNS, port: 53 },
      ]);
      assert.equal(n1!.ok, false, n1!.out);
      assert.equal(n2!.ok, false, n2!.out);
      const r = await probe(
        client,
        sb.id,
        [
          { kind: 'http', url: 'http://allowed.example/q' },
          { kind: 'http', url: 'https://allowed.example/', ca: true },
          { kind: 'http', url: `http://${RAW_ALLOWED}/` },
          { kind: 'dns', name: 'unlisted.example' },
          { kind: 'tls', ip: NAMES['allowed.example'], sni: 'other.example' },
          { kind: 'host', ip: NAMES['allowed.example'], host: 'other.example' },
          { kind: 'http', url: `http://${RAW_REFUSED}/` },
          { kind: 'tcp', host: sb.network!.gateway, port: Number(new URL(t.server.url).port) },
          { kind: 'http', url: 'http://169.254.169.254/' },
        ],
        net.caPem,
      );
      assert.match(r[0]!.out, /^host=allowed\.example sni=- at=198\.18\.1\.10 path=\/q/, r[0]!.out);
      assert.match(r[1]!.out, /sni=allowed\.example/, r[1]!.out);
      assert.match(r[2]!.out, /at=198\.18\.1\.13/, r[2]!.out);
      for (let i = 3; i < r.length; i++) {
        assert.equal(r[i]!.ok, false, `probe ${i} should be refused: ${r[i]!.out}`);
        assert.ok(r[i]!.ms < 5000, `probe ${i} took ${r[i]!.ms} ms`);
      }
      let missing: string[] = [];
      for (let i = 0; i < 50; i++) {
        const ev = (await client.sandboxes.networkEvents(sb.id)).events;
        const want: Record<string, boolean> = {
          'dns unlisted refused': ev.some((e) => e.kind === 'dns' && e.name === 'unlisted.example' && e.verdict === 'refused'),
          'sni other refused': ev.some((e) => e.kind === 'connection' && e.name === 'other.example' && e.port === 443 && e.verdict === 'refused'),
          'raw refused': ev.some((e) => e.kind === 'connection' && e.address === RAW_REFUSED && e.verdict === 'refused'),
          'metadata refused': ev.some((e) => e.kind === 'connection' && e.address === '169.254.169.254' && e.verdict === 'refused'),
        };
        missing = Object.entries(want)
          .filter(([, v]) => !v)
          .map(([k]) => k);
        if (!missing.length) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.deepEqual(missing, []);
    } finally {
      await client.sandboxes.delete(sb.id);
      await client.sandboxes.delete(none.id);
    }
  });
});
