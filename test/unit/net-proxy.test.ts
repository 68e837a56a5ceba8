/** The HTTP gate's one-request rule (src/net/proxy.ts oneRequestOnly). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { oneRequestOnly } from '../../src/net/proxy.js';

const text = (b: Buffer) => b.toString('latin1');

describe('net/proxy oneRequestOnly', () => {
  it('replaces the connection headers with Connection: close and keeps the body that followed', () => {
    const req = Buffer.from('POST /up HTTP/1.1\r\nHost: a.example\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nContent-Length: 4\r\n\r\nbody');
    assert.equal(text(oneRequestOnly(req)), 'POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody');
  });

  it('adds Connection: close to a head without one', () => {
    assert.equal(text(oneRequestOnly(Buffer.from('GET / HTTP/1.1\r\nHost: a.example\r\n\r\n'))), 'GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
  });

  it('leaves an Upgrade request (websocket) and an incomplete head as they are', () => {
    const ws = Buffer.from('GET /ws HTTP/1.1\r\nHost: a.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n');
    assert.equal(oneRequestOnly(ws), ws);
    const partial = Buffer.from('GET / HTTP/1.1\r\nHost: a.ex');
    assert.equal(oneRequestOnly(partial), partial);
  });

  it('a pipelined second request stays after the rewritten first one (the server closes after the first)', () => {
    const two = Buffer.from('GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\nGET /2 HTTP/1.1\r\nHost: b.example\r\n\r\n');
    assert.equal(text(oneRequestOnly(two)), 'GET /1 HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\nGET /2 HTTP/1.1\r\nHost: b.example\r\n\r\n');
  });
});
