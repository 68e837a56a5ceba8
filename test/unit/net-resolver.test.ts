/**
 * kiln's resolver (src/net/resolver.ts) over UDP and TCP on 127.0.0.1, against a small upstream
 * DNS server of the test's own on 127.0.0.1: TCP framing (several queries per connection, split and
 * pipelined), the same decisions, admissions and audit records whichever transport, truncation of
 * long UDP answers, asking upstream again over TCP, and the TCP limits.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { frame } from '../../src/net/dns-tcp.js';
import { buildAnswer, buildQuery, isTruncated, parseQuery, parseResponse, QTYPE, type Question, RCODE } from '../../src/net/dns-wire.js';
import { Resolver, type ResolverClient } from '../../src/net/resolver.js';

const HOST = '127.0.0.1';
const BIG = Array.from({ length: 60 }, (_, i) => `192.0.2.${i + 1}`); // 60 A records: 16 bytes each, past 512

/** The upstream: UDP and TCP on one port; `huge.test` is truncated over UDP (TC, no records) and whole over TCP. */
async function startUpstream(): Promise<{ port: number; tcpQueries: () => number; close(): void }> {
  const ips = (n: string) => (n === 'allowed.test' ? ['198.18.7.1'] : n === 'big.test' || n === 'huge.test' ? BIG : []);
  const answerFor = (m: Buffer, udp: boolean) => {
    const q = parseQuery(m);
    if (udp && q.name === 'huge.test') {
      const a = buildAnswer(m, q, [], 60);
      a.writeUInt16BE(0x8380, 2); // QR, TC, RD, RA; NOERROR
      return a;
    }
    return buildAnswer(m, q, ips(q.name), 120);
  };
  let tcpQueries = 0;
  const udp = dgram.createSocket('udp4');
  udp.on('message', (m, r) => udp.send(answerFor(m, true), r.port, r.address));
  const tcp = net.createServer((s) => {
    s.once('data', (b: Buffer) => {
      tcpQueries++;
      s.end(frame(answerFor(b.subarray(2, 2 + b.readUInt16BE(0)), false)));
    });
  });
  await new Promise<void>((r) => tcp.listen({ host: HOST, port: 0 }, r));
  const port = (tcp.address() as net.AddressInfo).port;
  await new Promise<void>((r) => udp.bind({ address: HOST, port }, r));
  return {
    port,
    tcpQueries: () => tcpQueries,
    close: () => {
      tcp.close();
      udp.close();
    },
  };
}

interface Recorded {
  name: string;
  verdict: string;
  addresses?: string[];
  reason?: string;
}

function fakeClient(records: Recorded[], admitted: string[][]): ResolverClient {
  return {
    decide: (q: Question) => (q.name.endsWith('.test') && q.name !== 'unlisted.test' ? (q.type === QTYPE.AAAA ? 'empty' : 'allow') : 'refuse'),
    admit: async (_q, addrs) => void admitted.push(addrs.map((a) => a.ip)),
    record: (q, verdict, d) => void records.push({ name: q.name, verdict, ...d }),
  };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen({ host: HOST, port: 0 }, r));
  const { port } = s.address() as net.AddressInfo;
  await new Promise((r) => s.close(r));
  return port;
}

function udpQuery(port: number, q: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => {
      s.close();
      reject(new Error('no UDP answer'));
    }, 3000);
    s.once('message', (m) => {
      clearTimeout(t);
      s.close();
      resolve(m);
    });
    s.send(q, port, HOST);
  });
}

/** A TCP connection to the resolver: `send` raw bytes, `next` reads the next framed answer; `closed` resolves on close. */
async function tcpConn(port: number) {
  const sock = net.connect({ host: HOST, port });
  await new Promise<void>((r, j) => sock.once('connect', r).once('error', j));
  let buf = Buffer.alloc(0);
  const waiting: Array<() => void> = [];
  sock.on('data', (b: Buffer) => {
    buf = Buffer.concat([buf, b]);
    for (const w of waiting.splice(0)) w();
  });
  const closed = new Promise<void>((r) => sock.once('close', () => r()));
  sock.on('error', () => undefined);
  return {
    sock,
    closed,
    send: (b: Buffer) => sock.write(b),
    async next(): Promise<Buffer> {
      for (;;) {
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + m.length);
          return Buffer.from(m);
        }
        if (sock.destroyed) throw new Error('connection closed before an answer');
        await Promise.race([new Promise<void>((r) => waiting.push(r)), closed]);
      }
    },
  };
}

describe('net/resolver over UDP and TCP', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let resolver: Resolver;
  let port: number;
  const records: Recorded[] = [];
  const admitted: string[][] = [];

  before(async () => {
    upstream = await startUpstream();
    port = await freePort();
    resolver = new Resolver({
      address: HOST,
      port,
      upstream: [HOST],
      upstreamPort: upstream.port,
      clientFor: (ip) => (ip === HOST ? fakeClient(records, admitted) : undefined),
      tcpLimits: { idleMs: 300, maxConnectionsPerClient: 3 },
    });
    await resolver.start();
  });
  after(() => {
    resolver?.close();
    upstream?.close();
  });

  it('TCP: several queries on one connection, pipelined in one write and split byte by byte, answered in order', async () => {
    records.length = 0;
    admitted.length = 0;
    const c = await tcpConn(port);
    try {
      c.send(Buffer.concat([frame(buildQuery(0x1111, 'allowed.test', QTYPE.A)), frame(buildQuery(0x2222, 'unlisted.test', QTYPE.A))]));
      const a1 = await c.next();
      const a2 = await c.next();
      assert.equal(a1.readUInt16BE(0), 0x1111);
      assert.deepEqual(parseResponse(a1), { rcode: RCODE.NOERROR, addresses: [{ ip: '198.18.7.1', ttl: 120 }] });
      assert.equal(a2.readUInt16BE(0), 0x2222);
      assert.equal(parseResponse(a2).rcode, RCODE.NXDOMAIN);
      const third = frame(buildQuery(0x3333, 'allowed.test', QTYPE.AAAA));
      for (const byte of third) {
        c.send(Buffer.from([byte]));
        await new Promise((r) => setImmediate(r));
      }
      const a3 = await c.next();
      assert.equal(a3.readUInt16BE(0), 0x3333);
      assert.deepEqual(parseResponse(a3), { rcode: RCODE.NOERROR, addresses: [] });
    } finally {
      c.sock.destroy();
    }
    assert.deepEqual(admitted, [['198.18.7.1']]);
    assert.deepEqual(records, [
      { name: 'allowed.test', verdict: 'allowed', addresses: ['198.18.7.1'] },
      { name: 'unlisted.test', verdict: 'refused', reason: 'not in the allowlist' },
    ]);
  });

  it('UDP and TCP make the same decisions, admissions and records', async () => {
    const run = async (tcp: boolean) => {
      records.length = 0;
      admitted.length = 0;
      const answers: Buffer[] = [];
      for (const [id, n] of [
        [1, 'allowed.test'],
        [2, 'unlisted.test'],
      ] as const) {
        const q = buildQuery(id, n, QTYPE.A);
        if (!tcp) answers.push(await udpQuery(port, q));
        else {
          const c = await tcpConn(port);
          c.send(frame(q));
          answers.push(await c.next());
          c.sock.destroy();
        }
      }
      return { answers: answers.map((a) => a.toString('hex')), records: [...records], admitted: [...admitted] };
    };
    const udp = await run(false);
    const tcp = await run(true);
    assert.equal(udp.records.length, 2);
    assert.deepEqual(tcp, udp);
  });

  it('UDP: an answer longer than 512 bytes comes back truncated (TC, no records) unless EDNS allows it; TCP gets it whole', async () => {
    const q = buildQuery(7, 'big.test', QTYPE.A);
    const short = await udpQuery(port, q);
    assert.ok(isTruncated(short), 'TC set');
    assert.equal(short.readUInt16BE(6), 0, 'no answer records');
    assert.equal(short.readUInt16BE(0), 7);
    assert.ok(short.length <= 512);
    // The same query with an EDNS(0) OPT record offering 4096 bytes.
    const edns = Buffer.concat([q, Buffer.from([0, 0, 41, 0x10, 0x00, 0, 0, 0, 0, 0, 0])]);
    edns.writeUInt16BE(1, 10);
    const whole = await udpQuery(port, edns);
    assert.ok(!isTruncated(whole));
    assert.equal(parseResponse(whole).addresses.length, BIG.length);
    const c = await tcpConn(port);
    c.send(frame(q));
    const overTcp = await c.next();
    c.sock.destroy();
    assert.ok(!isTruncated(overTcp));
    assert.equal(parseResponse(overTcp).addresses.length, BIG.length);
  });

  it('TCP: a truncated upstream UDP answer is asked again upstream over TCP', async () => {
    const before = upstream.tcpQueries();
    const c = await tcpConn(port);
    c.send(frame(buildQuery(9, 'huge.test', QTYPE.A)));
    const a = await c.next();
    c.sock.destroy();
    assert.equal(upstream.tcpQueries(), before + 1);
    assert.ok(!isTruncated(a));
    assert.equal(parseResponse(a).addresses.length, BIG.length);
    // Over UDP the upstream's truncated answer is passed on as it is: the client retries over TCP.
    assert.ok(isTruncated(await udpQuery(port, buildQuery(10, 'huge.test', QTYPE.A))));
  });

  it('TCP limits: a too-short message closes the connection, an idle one is closed, connections per client are bounded', async () => {
    const bad = await tcpConn(port);
    bad.send(Buffer.from([0, 5, 1, 2, 3, 4, 5]));
    await bad.closed;
    const idle = await tcpConn(port);
    const t0 = Date.now();
    await idle.closed;
    assert.ok(Date.now() - t0 < 2000, 'closed after the idle time');
    const open = await Promise.all([tcpConn(port), tcpConn(port), tcpConn(port)]);
    const extra = await tcpConn(port);
    await extra.closed; // the fourth from the same client: closed at once
    open[0]!.send(frame(buildQuery(5, 'allowed.test', QTYPE.A)));
    assert.equal((await open[0]!.next()).readUInt16BE(0), 5, 'the others still serve');
    for (const o of open) o.sock.destroy();
    // Once they are gone a new connection is served again.
    await new Promise((r) => setTimeout(r, 50));
    const again = await tcpConn(port);
    again.send(frame(buildQuery(6, 'allowed.test', QTYPE.A)));
    assert.equal((await again.next()).readUInt16BE(0), 6);
    again.sock.destroy();
  });

  it('a client with no sandbox gets REFUSED over TCP as over UDP', async () => {
    // The resolver knows 127.0.0.1 only; ask from 127.0.0.2.
    const sock = net.connect({ host: HOST, port, localAddress: '127.0.0.2' });
    const got = await new Promise<Buffer>((resolve, reject) => {
      sock.once('connect', () => sock.write(frame(buildQuery(3, 'allowed.test', QTYPE.A))));
      sock.once('data', (b: Buffer) => resolve(b.subarray(2)));
      sock.once('error', reject);
    });
    sock.destroy();
    assert.equal(parseResponse(got).rcode, RCODE.REFUSED);
  });
});
