/**
 * DNS over TCP (RFC 1035 §4.2.2, RFC 7766): each message is prefixed by its length in two bytes,
 * and a connection may carry several queries. The resolver serves it on the same port as UDP
 * (answers too long for UDP come back truncated, and clients ask again here), and uses it towards
 * an upstream whose UDP answer was truncated.
 *
 * A connection is bounded: idle for IDLE_MS it is closed, a message shorter than a DNS header
 * closes it, at most MAX_QUEUED queries wait (the socket is paused beyond), and each sandbox holds at
 * most MAX_CONNECTIONS_PER_CLIENT connections at once (more are closed at once).
 */
import net from 'node:net';

export interface TcpLimits {
  idleMs: number;
  maxQueued: number;
  maxConnectionsPerClient: number;
  maxConnections: number;
}

export const TCP_LIMITS: TcpLimits = { idleMs: 10_000, maxQueued: 8, maxConnectionsPerClient: 16, maxConnections: 1024 };

/** Splits a byte stream into length-prefixed messages; `push` returns the complete ones, throws on a bad length. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: Buffer[] = [];
    while (this.buf.length >= 2) {
      const len = this.buf.readUInt16BE(0);
      if (len < 12) throw new Error(`a ${len}-byte DNS message is shorter than its header`);
      if (this.buf.length < 2 + len) break;
      out.push(Buffer.from(this.buf.subarray(2, 2 + len)));
      this.buf = this.buf.subarray(2 + len);
    }
    return out;
  }
}

export function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(2);
  head.writeUInt16BE(message.length, 0);
  return Buffer.concat([head, message]);
}

export interface TcpServerOptions {
  address: string;
  port: number;
  /** The answer to one query from `client` (undefined: none, the query is dropped). */
  answer(query: Buffer, client: string): Promise<Buffer | undefined>;
  log?: (msg: string, data: Record<string, unknown>) => void;
  /** TCP_LIMITS unless given (tests shorten the idle time). */
  limits?: Partial<TcpLimits>;
}

/** The listener: serves each connection's queries in order, within TCP_LIMITS. */
export async function serveTcp(o: TcpServerOptions): Promise<{ close(): void }> {
  const limits = { ...TCP_LIMITS, ...o.limits };
  const perClient = new Map<string, number>();
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    const client = sock.remoteAddress ?? '';
    const count = (perClient.get(client) ?? 0) + 1;
    if (count > limits.maxConnectionsPerClient) {
      sock.destroy();
      return;
    }
    perClient.set(client, count);
    sockets.add(sock);
    sock.once('close', () => {
      sockets.delete(sock);
      const n = (perClient.get(client) ?? 1) - 1;
      if (n > 0) perClient.set(client, n);
      else perClient.delete(client);
    });
    serveConnection(sock, client, o, limits);
  });
  server.maxConnections = limits.maxConnections;
  server.on('error', (e) => o.log?.('resolver TCP listener error', { error: e.message }));
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen({ host: o.address, port: o.port }, () => {
      server.off('error', rej);
      res();
    });
  });
  return {
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

function serveConnection(sock: net.Socket, client: string, o: TcpServerOptions, limits: TcpLimits): void {
  const reader = new FrameReader();
  const queue: Buffer[] = [];
  let busy = false;
  sock.setNoDelay(true);
  sock.setTimeout(limits.idleMs, () => sock.destroy());
  sock.on('error', () => sock.destroy());
  const drain = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    while (queue.length && !sock.destroyed) {
      const q = queue.shift()!;
      if (queue.length < limits.maxQueued) sock.resume();
      const a = await o.answer(q, client).catch((e: Error) => {
        o.log?.('resolver: a TCP query failed', { error: e.message });
        return undefined;
      });
      if (a && !sock.destroyed && !sock.write(frame(a))) await new Promise((r) => sock.once('drain', r).once('close', r));
    }
    busy = false;
  };
  sock.on('data', (chunk: Buffer) => {
    let got: Buffer[];
    try {
      got = reader.push(chunk);
    } catch {
      sock.destroy();
      return;
    }
    queue.push(...got);
    if (queue.length >= limits.maxQueued) sock.pause();
    void drain();
  });
}

/** One query to `server` over TCP, from `localAddress`; undefined on any failure or after `timeoutMs`. */
export function queryTcp(server: string, port: number, localAddress: string, query: Buffer, timeoutMs: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const reader = new FrameReader();
    const sock = net.connect({ host: server, port, localAddress });
    const done = (b: Buffer | undefined) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(b);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    sock.once('connect', () => sock.write(frame(query)));
    sock.on('data', (chunk: Buffer) => {
      try {
        const [m] = reader.push(chunk);
        if (m) done(m);
      } catch {
        done(undefined);
      }
    });
    sock.once('error', () => done(undefined));
    sock.once('close', () => done(undefined));
  });
}
