/**
 * HTTP/1.1 over a raw TCP socket, so a request target reaches the server exactly as written
 * (fetch and http.request normalise paths; an attacker's client does not).
 */
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface RawRequest {
  method: string;
  target: string;
  headers?: Record<string, string>;
  body?: string;
}

export function rawRequest(port: number, r: RawRequest, timeoutMs = 30_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const body = r.body ?? '';
    const headers: Record<string, string> = { host: `127.0.0.1:${port}`, connection: 'close', ...r.headers };
    if (body || r.method === 'POST' || r.method === 'PUT') headers['content-length'] = String(Buffer.byteLength(body));
    const head = [`${r.method} ${r.target} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`), '', ''].join('\r\n');
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no answer to ${r.method} ${r.target} within ${timeoutMs} ms`));
    }, timeoutMs);
    const finish = (): void => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      const lines = text.slice(0, end < 0 ? text.length : end).split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1] ?? 0);
      const hs: Record<string, string> = {};
      for (const l of lines.slice(1)) {
        const i = l.indexOf(':');
        if (i > 0) hs[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      resolve({ status, headers: hs, body: end < 0 ? '' : text.slice(end + 4) });
    };
    sock.on('data', (c: Buffer) => {
      chunks.push(c);
      // A 101 keeps the connection open: the head is all there is to read.
      if (/^HTTP\/1\.1 101 /.test(Buffer.concat(chunks).toString('latin1')) && Buffer.concat(chunks).includes('\r\n\r\n')) {
        sock.destroy();
        finish();
      }
    });
    sock.on('end', () => {
      sock.destroy();
      finish();
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.write(head + body);
  });
}
