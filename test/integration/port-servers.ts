/**
 * Servers the port tests start inside a sandbox (plain python3, nothing beyond its standard
 * library) and the checks around them, shared by the namespace and the qemu tests.
 */
import assert from 'node:assert/strict';
import type { KilnClient } from '../../sdk/src/index.js';

export const HTTP_PORT = 8000;
export const WS_PORT = 8001;

/** HTTP on argv[1]: GET /info (what it was sent), POST /echo (the body back), GET /stream (three chunks 300 ms apart). */
export const HTTP_SERVER = String.raw`
import json, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith('/stream'):
            self.send_response(200)
            self.send_header('content-type', 'text/plain')
            self.send_header('transfer-encoding', 'chunked')
            self.end_headers()
            for i in range(3):
                data = ('chunk%d\n' % i).encode()
                self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
                self.wfile.flush()
                time.sleep(0.3)
            self.wfile.write(b'0\r\n\r\n')
            return
        body = json.dumps({'method': 'GET', 'path': self.path, 'headers': {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(body)))
        self.send_header('x-app', 'yes')
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        n = int(self.headers.get('content-length', '0'))
        data = self.rfile.read(n)
        self.send_response(201)
        self.send_header('content-type', 'application/octet-stream')
        self.send_header('content-length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

/** A WebSocket echo server on argv[1] (RFC 6455 by hand: handshake, masked frames in, echoes out). */
export const WS_ECHO_SERVER = String.raw`
import base64, hashlib, socketserver, struct, sys

GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

class H(socketserver.BaseRequestHandler):
    def read(self, n):
        buf = b''
        while len(buf) < n:
            got = self.request.recv(n - len(buf))
            if not got:
                raise EOFError
            buf += got
        return buf
    def handle(self):
        head = b''
        while b'\r\n\r\n' not in head:
            got = self.request.recv(4096)
            if not got:
                return
            head += got
        lines = head.split(b'\r\n\r\n')[0].decode().split('\r\n')
        headers = {l.split(':', 1)[0].strip().lower(): l.split(':', 1)[1].strip() for l in lines[1:] if ':' in l}
        accept = base64.b64encode(hashlib.sha1((headers['sec-websocket-key'] + GUID).encode()).digest()).decode()
        self.request.sendall(('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                              'Sec-WebSocket-Accept: %s\r\nX-Path: %s\r\n\r\n' % (accept, lines[0].split(' ')[1])).encode())
        try:
            while True:
                b0, b1 = self.read(2)
                op, n = b0 & 0x0f, b1 & 0x7f
                if n == 126:
                    n = struct.unpack('>H', self.read(2))[0]
                elif n == 127:
                    n = struct.unpack('>Q', self.read(8))[0]
                mask = self.read(4) if b1 & 0x80 else b'\0\0\0\0'
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.read(n)))
                if op == 8:
                    self.request.sendall(b'\x88\x00')
                    return
                if len(data) < 126:
                    hdr = bytes([0x80 | op, len(data)])
                elif len(data) < 65536:
                    hdr = bytes([0x80 | op, 126]) + struct.pack('>H', len(data))
                else:
                    hdr = bytes([0x80 | op, 127]) + struct.pack('>Q', len(data))
                self.request.sendall(hdr + data)
        except EOFError:
            pass

class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

S(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

/** Established TCP connections in the sandbox whose local port is `port` (its /proc/net/tcp, IPv4). */
export async function establishedOn(kiln: KilnClient, id: string, port: number): Promise<number> {
  const r = await kiln.sandboxes.exec(id, { cmd: ['cat', '/proc/net/tcp'] });
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return r.stdout.split('\n').filter((l) => {
    const f = l.trim().split(/\s+/);
    return f[1]?.endsWith(hex) && f[3] === '01';
  }).length;
}

/** Polls until `check` holds (or fails with what it last saw). */
export async function eventually<T>(what: string, get: () => Promise<T>, check: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await get();
    if (check(v)) return v;
    if (Date.now() - t0 > timeoutMs) assert.fail(`${what}: still ${JSON.stringify(v)} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts the test servers in the sandbox and waits until the proxy reaches them. */
export async function startServers(kiln: KilnClient, id: string, timeoutMs = 15_000): Promise<void> {
  await kiln.sandboxes.writeFile(id, '/tmp/http_srv.py', HTTP_SERVER);
  await kiln.sandboxes.writeFile(id, '/tmp/ws_srv.py', WS_ECHO_SERVER);
  const r = await kiln.sandboxes.exec(id, {
    cmd: `setsid python3 /tmp/http_srv.py ${HTTP_PORT} >/tmp/http.log 2>&1 < /dev/null & setsid python3 /tmp/ws_srv.py ${WS_PORT} >/tmp/ws.log 2>&1 < /dev/null &`,
  });
  assert.equal(r.exitCode, 0, r.stderr);
  for (const port of [HTTP_PORT, WS_PORT])
    await eventually(
      `server on ${port}`,
      () => listeningOn(kiln, id, port),
      (n) => n > 0,
      timeoutMs,
    );
}

async function listeningOn(kiln: KilnClient, id: string, port: number): Promise<number> {
  const r = await kiln.sandboxes.exec(id, { cmd: ['cat', '/proc/net/tcp'] });
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return r.stdout.split('\n').filter((l) => l.trim().split(/\s+/)[1]?.endsWith(hex)).length;
}
