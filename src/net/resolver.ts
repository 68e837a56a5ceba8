/**
 * kiln's resolver, on the bridge's address: every sandbox's DNS goes here (nftables redirects
 * port 53 whatever server it names). An allowlist sandbox gets answers for allowed names only
 * (NXDOMAIN at once otherwise); the addresses an allowed name resolves to are admitted to the
 * firewall for the record's TTL before the answer goes back, so the connection that follows finds
 * them. Upstream queries leave from the bridge's address, which kiln's routing table sends out of
 * the uplink only.
 *
 * UDP and TCP (dns-tcp.ts) on the same port share one path: the same decision, admission and audit
 * event for a query whichever way it came. A UDP answer longer than the client takes (512 bytes, or
 * its EDNS size) goes back truncated (TC set) so the client asks again over TCP; a truncated
 * upstream answer to a TCP query is asked again upstream over TCP.
 */
import dgram from 'node:dgram';
import { queryTcp, serveTcp, type TcpLimits } from './dns-tcp.js';
import { buildQuery, emptyAnswer, isTruncated, parseQuery, parseResponse, QTYPE, type Question, RCODE, truncatedAnswer, udpAnswerLimit } from './dns-wire.js';

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
  private tcp: { close(): void } | undefined;
  private upstreamSock: dgram.Socket | undefined;
  private readonly pending = new Map<number, (b: Buffer) => void>();
  private nextId = Math.floor(Math.random() * 65536);

  constructor(
    private readonly o: {
      address: string;
      port: number;
      upstream: string[];
      /** The upstream servers' port (53; tests run theirs elsewhere). */
      upstreamPort?: number;
      tcpLimits?: Partial<TcpLimits>;
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
    s.on('message', (m, rinfo) => void this.handleUdp(m, rinfo.address, rinfo.port));
    s.on('error', (e) => this.o.log?.('resolver socket error', { error: e.message }));
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.bind({ address: this.o.address, port: this.o.port }, () => res());
    });
    this.server = s;
    try {
      this.tcp = await serveTcp({ address: this.o.address, port: this.o.port, answer: (m, client) => this.answer(m, client, 'tcp'), log: this.o.log, limits: this.o.tcpLimits });
    } catch (e) {
      this.close();
      throw e;
    }
  }

  close(): void {
    this.server?.close();
    this.tcp?.close();
    this.tcp = undefined;
    this.upstreamSock?.close();
    this.server = undefined;
    this.upstreamSock = undefined;
    for (const done of this.pending.values()) done(Buffer.alloc(0));
  }

  private async handleUdp(m: Buffer, address: string, port: number): Promise<void> {
    const a = await this.answer(m, address, 'udp').catch((e: Error) => {
      this.o.log?.('resolver: a query failed', { error: e.message });
      return undefined;
    });
    if (a) this.server?.send(a, port, address);
  }

  /**
   * The answer to one query from `address`, by its sandbox's policy (undefined: not a query, no
   * answer). Refused names are NXDOMAIN, an allowed A answer's addresses are admitted before it is
   * returned, and every decision is recorded once, whichever transport the query came by.
   */
  async answer(m: Buffer, address: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    const client = this.o.clientFor(address);
    let q: Question;
    try {
      q = parseQuery(m);
    } catch {
      return undefined; // not a query: nothing to answer
    }
    if (!client) return emptyAnswer(m, q, RCODE.REFUSED);
    const d = client.decide(q);
    if (d === 'refuse') {
      client.record(q, 'refused', { reason: 'not in the allowlist' });
      return emptyAnswer(m, q, RCODE.NXDOMAIN);
    }
    if (d === 'empty') return emptyAnswer(m, q, RCODE.NOERROR);
    let answer = await this.forward(m);
    if (answer && transport === 'tcp' && isTruncated(answer)) answer = await this.forwardTcp(m);
    if (!answer) {
      client.record(q, 'allowed', { reason: 'upstream resolver did not answer' });
      return emptyAnswer(m, q, RCODE.SERVFAIL);
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
    if (transport === 'udp' && answer.length > udpAnswerLimit(m, q)) return truncatedAnswer(m, q, answer);
    return answer.length > 0xffff ? truncatedAnswer(m, q, answer) : answer;
  }

  /** The upstream's answer over TCP (after a truncated UDP one), trying each upstream in turn. */
  private async forwardTcp(query: Buffer): Promise<Buffer | undefined> {
    for (const server of this.o.upstream) {
      const got = await queryTcp(server, this.o.upstreamPort ?? 53, this.o.address, query, UPSTREAM_TIMEOUT_MS);
      if (got && got.length >= 12) return got;
    }
    return undefined;
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
        this.upstreamSock?.send(out, this.o.upstreamPort ?? 53, server, (err) => {
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
