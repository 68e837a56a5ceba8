/**
 * The name a connection asks for (src/net/sni.ts): real ClientHellos made by node:tls against a
 * local TCP server that keeps the first bytes, and HTTP/1 request heads.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { describe, it } from 'node:test';
import { connect } from 'node:tls';
import { sniffHttp, sniffTls } from '../../src/net/sni.js';

/** The first bytes a node:tls client sends (its ClientHello), with or without a server name. */
async function clientHello(servername: string | undefined): Promise<Buffer> {
  let received: (b: Buffer) => void = () => undefined;
  const got = new Promise<Buffer>((r) => {
    received = r;
  });
  const server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
        received(buf);
        s.destroy();
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  // An empty servername makes node:tls send no server_name extension.
  const client = connect({ host: '127.0.0.1', port, servername: servername ?? '', rejectUnauthorized: false });
  client.on('error', () => undefined);
  try {
    return await got;
  } finally {
    client.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}

describe('net/sni TLS', () => {
  it('reads the server_name of a real ClientHello', async () => {
    const hello = await clientHello('a.example');
    assert.equal(hello[0], 0x16);
    assert.deepEqual(sniffTls(hello), { kind: 'name', name: 'a.example' });
    assert.deepEqual(sniffTls(await clientHello('Mixed.Case.Example')), { kind: 'name', name: 'mixed.case.example' });
  });

  it('a ClientHello without SNI is named as such', async () => {
    const hello = await clientHello(undefined);
    assert.deepEqual(sniffTls(hello), { kind: 'none', reason: 'ClientHello without SNI' });
  });

  it('a ClientHello split across two chunks: need-more, then the name', async () => {
    const hello = await clientHello('a.example');
    for (const cut of [1, 4, 5, 40, hello.length - 1]) assert.deepEqual(sniffTls(hello.subarray(0, cut)), { kind: 'need-more' }, `cut at ${cut}`);
    assert.deepEqual(sniffTls(Buffer.concat([hello.subarray(0, 40), hello.subarray(40)])), { kind: 'name', name: 'a.example' });
  });

  it('refuses what is not a TLS handshake, or not a ClientHello, or too large', () => {
    assert.equal(sniffTls(Buffer.from('GET / HTTP/1.1\r\n\r\n')).kind, 'none');
    assert.deepEqual(sniffTls(Buffer.from([0x16, 3, 1, 0, 4, 0x02, 0, 0, 0])), { kind: 'none', reason: 'not a ClientHello' });
    assert.deepEqual(sniffTls(Buffer.from([0x16, 3, 1, 0xff, 0xff])), { kind: 'none', reason: 'ClientHello too large' });
  });
});

describe('net/sni HTTP', () => {
  const head = (...lines: string[]) => Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);

  it('reads the Host header, its port stripped, lower case', () => {
    assert.deepEqual(sniffHttp(head('GET /simple/ HTTP/1.1', 'Host: PyPI.org:8080', 'Accept: */*')), { kind: 'name', name: 'pypi.org' });
    assert.deepEqual(sniffHttp(head('POST /x HTTP/1.0', 'host:example.org')), { kind: 'name', name: 'example.org' });
  });

  it('need-more until the head is complete', () => {
    assert.deepEqual(sniffHttp(Buffer.from('GET / HTTP/1.1\r\nHost: example.org\r\n')), { kind: 'need-more' });
  });

  it('refuses several Host headers, none, an empty one, non-HTTP, an oversized head', () => {
    assert.deepEqual(sniffHttp(head('GET / HTTP/1.1', 'Host: allowed.example', 'Host: other.example')), { kind: 'none', reason: 'several Host headers' });
    assert.deepEqual(sniffHttp(head('GET / HTTP/1.1', 'Accept: */*')), { kind: 'none', reason: 'no Host header' });
    assert.deepEqual(sniffHttp(head('GET / HTTP/1.1', 'Host: ')), { kind: 'none', reason: 'empty Host header' });
    assert.deepEqual(sniffHttp(head('SSH-2.0-OpenSSH_9.2')), { kind: 'none', reason: 'not an HTTP/1 request' });
    assert.deepEqual(sniffHttp(head('PRI * HTTP/2.0', '', 'SM')), { kind: 'none', reason: 'not an HTTP/1 request' });
    assert.deepEqual(sniffHttp(Buffer.alloc(17 * 1024, 'a')), { kind: 'none', reason: 'request head too large' });
  });
});
