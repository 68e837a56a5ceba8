/**
 * kiln sandbox port-forward <id> [[HOST:]LOCAL:]REMOTE: a local TCP listener whose every
 * connection becomes one tunnel WebSocket (GET /v1/sandboxes/:id/tunnel/:port, docs/ports.md) to
 * REMOTE on the sandbox's loopback. Binary messages carry the bytes; the text message "eof" is a
 * half-close, each way. Resolves once the signal aborts (Ctrl-C) and everything is closed.
 */
import { createServer, type Server, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { KilnClient } from '../../sdk/src/index.js';
import { UsageError } from './command.js';

const WS_HIGH_WATER_BYTES = 256 * 1024;

export interface ForwardSpec {
  host: string;
  /** 0: any free port (the one taken is printed). */
  localPort: number;
  remotePort: number;
}

/** REMOTE, LOCAL:REMOTE, HOST:LOCAL:REMOTE or [IPv6]:LOCAL:REMOTE. */
export function parseForward(spec: string): ForwardSpec {
  const m = /^(?:(?:(\[[0-9A-Fa-f:.]+\]|[^:[\]]+):)?(\d{1,5}):)?(\d{1,5})$/.exec(spec);
  const remotePort = Number(m?.[3]);
  const localPort = m?.[2] === undefined ? remotePort : Number(m[2]);
  if (!m || remotePort < 1 || remotePort > 65535 || localPort > 65535)
    throw new UsageError(`"${spec}" is not a port to forward: give REMOTE, LOCAL:REMOTE or HOST:LOCAL:REMOTE (ports 1 to 65535; LOCAL 0 takes any free port)`);
  return { host: m[1]?.replace(/^\[|\]$/g, '') ?? '127.0.0.1', localPort, remotePort };
}

export async function portForward(kiln: KilnClient, token: string | undefined, id: string, spec: ForwardSpec, signal: AbortSignal): Promise<number> {
  await kiln.sandboxes.get(id); // an unknown sandbox is named now, not at the first connection
  const url = new URL(kiln.tunnelUrl(id, spec.remotePort));
  url.searchParams.delete('access_token'); // sent as a header: tokens stay out of URLs and logs
  const headers = token ? { authorization: `Bearer ${token}` } : undefined;
  const open = new Set<{ sock: Socket; ws: WebSocket }>();
  const server = createServer({ allowHalfOpen: true }, (sock) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    const pair = { sock, ws };
    open.add(pair);
    relay(sock, ws, () => open.delete(pair));
  });
  await listen(server, spec);
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : spec.localPort;
  const shown = spec.host.includes(':') ? `[${spec.host}]` : spec.host;
  console.log(`Forwarding ${shown}:${port} -> sandbox ${id}:${spec.remotePort}`);
  console.error('Ctrl-C to stop');
  await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
  for (const { sock, ws } of open) {
    sock.destroy();
    ws.terminate();
  }
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return 0;
}

function listen(server: Server, spec: ForwardSpec): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(new UsageError(`cannot listen on ${spec.host}:${spec.localPort}: ${e.code === 'EADDRINUSE' ? 'the port is in use; pick another LOCAL port' : e.message}`)),
    );
    server.listen(spec.localPort, spec.host, () => resolve());
  });
}

/** One local connection ↔ one tunnel, with backpressure both ways. */
function relay(sock: Socket, ws: WebSocket, done: () => void): void {
  sock.pause(); // until the tunnel is open
  ws.on('open', () => sock.resume());
  sock.on('data', (chunk: Buffer) => {
    ws.send(chunk, { binary: true }, () => {
      if (sock.isPaused() && ws.bufferedAmount < WS_HIGH_WATER_BYTES) sock.resume();
    });
    if (ws.bufferedAmount >= WS_HIGH_WATER_BYTES) sock.pause();
  });
  sock.on('end', () => {
    if (ws.readyState === WebSocket.OPEN) ws.send('eof');
  });
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      if (data.toString() === 'eof') sock.end();
      return;
    }
    if (!sock.write(data)) {
      ws.pause();
      sock.once('drain', () => ws.resume());
    }
  });
  ws.on('unexpected-response', (_req, res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c: string) => {
      body += c;
    });
    res.on('end', () => {
      console.error(`kiln sandbox port-forward: ${describe(res.statusCode, body)}`);
      sock.destroy();
      ws.terminate();
    });
  });
  ws.on('error', (e) => {
    console.error(`kiln sandbox port-forward: ${e.message}`);
    sock.destroy();
  });
  ws.on('close', () => {
    sock.end();
    done();
  });
  sock.on('error', () => ws.terminate());
  sock.on('close', () => {
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(1000);
    done();
  });
}

function describe(status: number | undefined, body: string): string {
  try {
    const e = JSON.parse(body) as { code?: string; message?: string };
    if (e.code && e.message) return `${e.code}: ${e.message}`;
  } catch {
    /* not kiln's JSON */
  }
  return `the tunnel was refused with HTTP ${status ?? '?'}`;
}
