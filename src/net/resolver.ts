/**
 * kiln's resolver, on the bridge's address: every sandbox's DNS goes here (nftables redirects
 * port 53 whatever server it names). An allowlist sandbox gets answers for allowed names only
 * (NXDOMAIN at once otherwise); the addresses an allowed name resolves to are admitted to the
 * firewall for the record's TTL before the answer goes back, so the connection that follows finds
 * them. Upstream queries leave from the bridge's address, which kiln's routing table sends out of
 * the uplink only.
 */
import dgram from 'node:dgram';
import { buildQuery, emptyAnswer, parseQuery, parseResponse, QTYPE, type Question, RCODE } from './dns-wire.js';

/** What the resolver asks the network manager about the sandbox a query came from. */
export interface ResolverClient {
  /** 'allow': forward; 'refuse': NXDOMAIN; 'empty': NOERROR with no records (AAAA: sandboxes have no IPv6). */
  decide(q: Question): 'allow' | 'refuse' | 'empty';
  /** Called with an allowed A answer's addresses before it is sent back; the answer waits for it. */
  admit(q: Question, addresses: { ip: string; ttl: number }[]): Promise<void>;
  record(q: Question, verdict: 'allowed' | 'refused', detail: { addresses?: string[]; reason?: string }): void;
}

const UPSTREAM_TIMEOUT_MS = 2000;

export class Resolver {
  private server: dgram.Socket | undefined;
  private upstreamSock: dgram.Socket | undefined;
  private readonly pending = new Map<number, (b: Buffer) => void>();
  private nextId = Math.floor(Math.random() * 65536);

  constructor(
    private readonly o: {
      address: string;
      port: number;
      upstream: string[];
      clientFor(ip: string): ResolverClient | undefined;
      log?: (msg: string, data: Record<string, unknown>) => void;
    },
  ) {}

  async start(): Promise<void> {
    const up = dgram.createSocket('udp4');
    up.on('message', (m) => {
      if (m.length < 2) return;
      const done = this.pending.get(m.readUInt16BE(0));
      done?.(m);
    });
    up.on('error', (e) => this.o.log?.('resolver upstream socket error', { error: e.message }));
    await new Promise<void>((res, rej) => {
      up.once('error', rej);
      up.bind({ address: this.o.address, port: 0 }, () => res());
    });
    this.upstreamSock = up;
    const s = dgram.createSocket('udp4');
    s.on('message', (m, rinfo) => void this.handle(m, rinfo.address, rinfo.port));
    s.on('error', (e) => this.o.log?.('resolver socket error', { error: e.message }));
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.bind({ address: this.o.address, port: this.o.port }, () => res());
    });
    this.server = s;
  }

  close(): void {
    this.server?.close();
    this.upstreamSock?.close();
    this.server = undefined;
    this.upstreamSock = undefined;
    for (const done of this.pending.values()) done(Buffer.alloc(0));
  }

  private reply(b: Buffer, address: string, port: number): void {
    this.server?.send(b, port, address);
  }

  private async handle(m: Buffer, address: string, port: number): Promise<void> {
    const client = this.o.clientFor(address);
    let q: Question;
    try {
      q = parseQuery(m);
    } catch {
      return; // not a query: nothing to answer
    }
    if (!client) {
      this.reply(emptyAnswer(m, q, RCODE.REFUSED), address, port);
      return;
    }
    const d = client.decide(q);
    if (d === 'refuse') {
      client.record(q, 'refused', { reason: 'not in the allowlist' });
      this.reply(emptyAnswer(m, q, RCODE.NXDOMAIN), address, port);
      return;
    }
    if (d === 'empty') {
      this.reply(emptyAnswer(m, q, RCODE.NOERROR), address, port);
      return;
    }
    const answer = await this.forward(m);
    if (!answer) {
      client.record(q, 'allowed', { reason: 'upstream resolver did not answer' });
      this.reply(emptyAnswer(m, q, RCODE.SERVFAIL), address, port);
      return;
    }
    let addresses: { ip: string; ttl: number }[] = [];
    try {
      if (q.type === QTYPE.A) addresses = parseResponse(answer).addresses;
    } catch {
      /* an answer kiln cannot read admits nothing */
    }
    if (addresses.length) await client.admit(q, addresses).catch((e: Error) => this.o.log?.('resolver: admitting addresses failed', { name: q.name, error: e.message }));
    client.record(q, 'allowed', { addresses: addresses.map((a) => a.ip) });
    answer.writeUInt16BE(q.id, 0);
    this.reply(answer, address, port);
  }

  /** The upstream's answer to `query` (its id rewritten), trying each upstream in turn; undefined on timeout. */
  async forward(query: Buffer): Promise<Buffer | undefined> {
    for (const server of this.o.upstream) {
      const id = this.nextId++ & 0xffff;
      const out = Buffer.from(query);
      out.writeUInt16BE(id, 0);
      const got = await new Promise<Buffer | undefined>((resolve) => {
        const timer = setTimeout(() => {
          this.pending.delete(id);
          resolve(undefined);
        }, UPSTREAM_TIMEOUT_MS);
        this.pending.set(id, (b) => {
          clearTimeout(timer);
          this.pending.delete(id);
          resolve(b.length ? b : undefined);
        });
        this.upstreamSock?.send(out, 53, server, (err) => {
          if (err) this.pending.get(id)?.(Buffer.alloc(0));
        });
      });
      if (got) return got;
    }
    return undefined;
  }

  /** The A records of `name` from upstream (the proxy's lookup of a name it was not asked to resolve). */
  async lookup(name: string): Promise<{ ip: string; ttl: number }[]> {
    const a = await this.forward(buildQuery(0, name, QTYPE.A));
    try {
      return a ? parseResponse(a).addresses : [];
    } catch {
      return [];
    }
  }
}
