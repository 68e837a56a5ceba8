/**
 * The allowlist parity cases on a qemu microVM (TAP on kiln's bridge, guest configured by
 * net.config), through the HTTP API, against the test internet of test/net/fake-internet.ts; and
 * bandwidthMbit both ways (QEMU has no limiter of its own: what the VM sends meets kiln's nftables policer).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { SEND_BURST_BYTES } from '../../src/net/nft.js';
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

  it('bandwidthMbit limits what a VM downloads and uploads', async () => {
    const mbitLimit = 4;
    const sb = await t.client.sandboxes.create({ pack: 'python', backend: 'qemu', network: { policy: 'allowlist', allow: ['allowed.example'], bandwidthMbit: mbitLimit } });
    try {
      assert.equal(sb.network?.bandwidthMbit, mbitLimit);
      const policer = () =>
        execFileSync('nft', ['list', 'table', 'inet', env.KILN_NET_NAME!], { encoding: 'utf8' }).match(/limit rate over 500000 bytes\/second burst 256 kbytes counter packets (\d+)/);
      assert.ok(policer(), 'the send policer is in place');
      // 3 MB each way at 4 Mbit/s (500 kB/s) takes about 6 s. The download's token bucket holds 256 KiB;
      // nftables' byte limiter holds one second of its rate plus its burst (SEND_BURST_BYTES).
      const script = [
        'import time, urllib.request',
        't = time.monotonic(); n = len(urllib.request.urlopen("http://allowed.example/bytes/3000000", timeout=120).read()); down = time.monotonic() - t',
        't = time.monotonic(); urllib.request.urlopen(urllib.request.Request("http://allowed.example/up", data=b"x" * 3000000), timeout=120).read(); up = time.monotonic() - t',
        'print(n, down, up)',
      ].join('\n');
      await t.client.sandboxes.writeFile(sb.id, '/tmp/bw.py', script);
      const r = await t.client.sandboxes.exec(sb.id, { cmd: ['python3', '/tmp/bw.py'], timeoutMs: 240_000 });
      assert.equal(r.exitCode, 0, r.stderr);
      const [n, down, up] = r.stdout.trim().split(' ').map(Number);
      assert.equal(n, 3_000_000);
      const mbit = (s: number) => (3_000_000 * 8) / s / 1e6;
      process.stderr.write(`# qemu at ${mbitLimit} Mbit/s: download ${mbit(down!).toFixed(2)} Mbit/s (${down!.toFixed(1)} s), upload ${mbit(up!).toFixed(2)} Mbit/s (${up!.toFixed(1)} s)\n`);
      assert.ok(mbit(down!) < mbitLimit * 1.25, `download at ${mbit(down!).toFixed(1)} Mbit/s`);
      const bytesPerSec = (mbitLimit * 1e6) / 8;
      const upMinSec = (3_000_000 - bytesPerSec - SEND_BURST_BYTES) / bytesPerSec;
      assert.ok(Number(policer()?.[1]) > 0, 'the policer dropped what the VM sent over the rate');
      assert.ok(up! >= upMinSec * 0.95, `upload in ${up!.toFixed(2)} s, at least ${upMinSec.toFixed(2)} s expected (${mbit(up!).toFixed(1)} Mbit/s)`);
    } finally {
      await t.client.sandboxes.delete(sb.id);
    }
  });
});
