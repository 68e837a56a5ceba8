/**
 * The TLS and HTTP gate: connections from an allowlist sandbox to an address admitted by name on
 * port 443 or 80 are redirected here. The first bytes must name an allowed host (TLS SNI, HTTP
 * Host); then kiln connects to that name's address itself, from the bridge's address, and splices
 * the two. So an allowed CDN address does not open every site behind it, and a sandbox cannot send
 * an allowed name to an address of its choosing.
 */
import net from 'node:net';
import { type Sniffed, sniffHttp, sniffTls } from './sni.js';

export interface ProxyClient {
  /** Where `name` may be reached on `port` (its admitted addresses), or a refusal reason. */
  route(name: string, port: number): Promise<{ address: string } | { refused: string }>;
  record(verdict: 'allowed' | 'refused', e: { name?: string; address?: string; port: number; reason?: string }): void;
}

const SNIFF_TIMEOUT_MS = 10_000;

export class WebGate {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly o: {
      address: string;
      tlsPort: number;
      httpPort: number;
      clientFor(ip: string): ProxyClient | undefined;
    },
  ) {}

  async start(): Promise<void> {
    for (const [port, kind] of [
      [this.o.tlsPort, 'tls'],
      [this.o.httpPort, 'http'],
    ] as const) {
      const server = net.createServer((s) => this.accept(s, kind));
      await new Promise<void>((res, rej) => {
        server.once('error', rej);
        server.listen({ host: this.o.address, port }, () => res());
      });
      this.servers.push(server);
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((s) => new Promise((r) => s.close(r))));
    this.servers.length = 0;
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
    s.on('error', () => undefined);
  }

  private accept(s: net.Socket, kind: 'tls' | 'http'): void {
    this.track(s);
    const port = kind === 'tls' ? 443 : 80;
    const client = this.o.clientFor(s.remoteAddress?.replace(/^::ffff:/, '') ?? '');
    if (!client) return void s.resetAndDestroy();
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done({ kind: 'none', reason: `no ${kind === 'tls' ? 'ClientHello' : 'request head'} within ${SNIFF_TIMEOUT_MS / 1000} s` }), SNIFF_TIMEOUT_MS);
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      const r = kind === 'tls' ? sniffTls(buf) : sniffHttp(buf);
      if (r.kind !== 'need-more') done(r);
    };
    let finished = false;
    const done = (r: Sniffed): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.off('data', onData);
      s.pause();
      if (r.kind !== 'name') {
        client.record('refused', { port, reason: `${kind === 'tls' ? 'TLS without an allowed server name' : 'HTTP without an allowed Host'}: ${r.kind === 'none' ? r.reason : 'incomplete'}` });
        s.resetAndDestroy();
        return;
      }
      void client.route(r.name, port).then((to) => {
        if ('refused' in to) {
          client.record('refused', { name: r.name, port, reason: to.refused });
          s.resetAndDestroy();
          return;
        }
        const up = net.connect({ host: to.address, port, localAddress: this.o.address });
        this.track(up);
        up.once('connect', () => {
          client.record('allowed', { name: r.name, address: to.address, port, reason: `${kind === 'tls' ? 'TLS SNI' : 'HTTP Host'} in the allowlist` });
          up.write(kind === 'http' ? oneRequestOnly(buf) : buf);
          s.pipe(up);
          up.pipe(s);
          s.resume();
        });
        up.once('error', (e) => {
          client.record('refused', { name: r.name, address: to.address, port, reason: `upstream connection failed: ${e.message}` });
          s.resetAndDestroy();
        });
        s.once('close', () => up.destroy());
        // pipe ended s after the upstream's last byte; a slow (rate-limited) sandbox may not have taken
        // it all yet, and a destroy now would cut its download short.
        up.once('close', () => (s.writableEnded && !s.writableFinished ? s.once('finish', () => s.destroy()) : s.destroy()));
      });
    };
    s.on('data', onData);
    s.once('end', () => done({ kind: 'none', reason: 'closed before naming a host' }));
  }
}

/**
 * The first request's head with `Connection: close` (unless it asks for an Upgrade): the server
 * answers this one request and closes, so a second request with another Host cannot follow on
 * the connection the first one's name opened.
 */
export function oneRequestOnly(buf: Buffer): Buffer {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return buf;
  const lines = buf.toString('latin1', 0, end).split('\r\n');
  if (lines.some((l) => /^upgrade:/i.test(l))) return buf;
  const kept = lines.filter((l, i) => i === 0 || !/^(connection|keep-alive|proxy-connection):/i.test(l));
  return Buffer.concat([Buffer.from(`${[...kept, 'Connection: close'].join('\r\n')}\r\n\r\n`, 'latin1'), buf.subarray(end + 4)]);
}
