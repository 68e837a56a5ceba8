/** The few parts of the DNS wire format (RFC 1035) kiln's resolver needs: one question in, answers out. */

export const QTYPE = { A: 1, CNAME: 5, AAAA: 28 } as const;
export const RCODE = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

export interface Question {
  id: number;
  /** Lower case, no trailing dot. */
  name: string;
  type: number;
  class: number;
  /** The recursion-desired flag, echoed in the answer. */
  rd: boolean;
  /** Offset just past the question section. */
  end: number;
}

/** Reads a (possibly compressed) name at `off`; the name and the offset after it in the record. */
function readName(buf: Buffer, off: number): { name: string; next: number } {
  const labels: string[] = [];
  let next = -1;
  for (let hops = 0; hops < 64; hops++) {
    if (off >= buf.length) throw new Error('truncated name');
    const len = buf[off]!;
    if (len === 0) {
      if (next < 0) next = off + 1;
      return { name: labels.join('.').toLowerCase(), next };
    }
    if ((len & 0xc0) === 0xc0) {
      if (off + 1 >= buf.length) throw new Error('truncated pointer');
      if (next < 0) next = off + 2;
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    if (len > 63 || off + 1 + len > buf.length) throw new Error('bad label');
    labels.push(buf.toString('latin1', off + 1, off + 1 + len));
    off += 1 + len;
  }
  throw new Error('name pointer loop');
}

/** The query's single question; throws on anything else (the resolver answers FORMERR-like by dropping it). */
export function parseQuery(buf: Buffer): Question {
  if (buf.length < 12) throw new Error('short packet');
  const flags = buf.readUInt16BE(2);
  if (flags & 0x8000) throw new Error('not a query');
  if (buf.readUInt16BE(4) !== 1) throw new Error('expected one question');
  const { name, next } = readName(buf, 12);
  if (next + 4 > buf.length) throw new Error('truncated question');
  return { id: buf.readUInt16BE(0), name, type: buf.readUInt16BE(next), class: buf.readUInt16BE(next + 2), rd: (flags & 0x0100) !== 0, end: next + 4 };
}

/** An answer with no records: the question echoed with `rcode` (NXDOMAIN for a refused name, NOERROR for an empty AAAA). */
export function emptyAnswer(query: Buffer, q: Question, rcode: number): Buffer {
  const out = Buffer.alloc(q.end);
  query.copy(out, 0, 0, q.end);
  out.writeUInt16BE(0x8000 | (q.rd ? 0x0100 : 0) | 0x0080 | rcode, 2); // QR, RD as asked, RA
  out.writeUInt16BE(1, 4);
  out.writeUInt32BE(0, 6); // no answers, no authority
  out.writeUInt16BE(0, 10);
  return out;
}

export interface Answer {
  rcode: number;
  /** A records anywhere in the answer section (the CNAME chain's end), with their TTLs. */
  addresses: { ip: string; ttl: number }[];
}

/** The rcode and the IPv4 addresses of an upstream response. */
export function parseResponse(buf: Buffer): Answer {
  if (buf.length < 12) throw new Error('short packet');
  const rcode = buf.readUInt16BE(2) & 0xf;
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = readName(buf, off).next + 4;
  const addresses: Answer['addresses'] = [];
  for (let i = 0; i < an; i++) {
    off = readName(buf, off).next;
    if (off + 10 > buf.length) throw new Error('truncated record');
    const type = buf.readUInt16BE(off);
    const ttl = buf.readUInt32BE(off + 4);
    const len = buf.readUInt16BE(off + 8);
    off += 10;
    if (off + len > buf.length) throw new Error('truncated record data');
    if (type === QTYPE.A && len === 4) addresses.push({ ip: `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`, ttl });
    off += len;
  }
  return { rcode, addresses };
}

/** A query for `name` (used by tests and by the proxy's own lookups). */
export function buildQuery(id: number, name: string, type: number): Buffer {
  const labels = name.split('.').filter(Boolean);
  const parts = [Buffer.from([id >> 8, id & 255, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0])];
  for (const l of labels) parts.push(Buffer.from([l.length]), Buffer.from(l, 'latin1'));
  parts.push(Buffer.from([0, type >> 8, type & 255, 0, 1]));
  return Buffer.concat(parts);
}

/** A response with A records (tests' upstream servers). */
export function buildAnswer(query: Buffer, q: Question, ips: string[], ttl: number): Buffer {
  const head = emptyAnswer(query, q, ips.length ? RCODE.NOERROR : RCODE.NXDOMAIN);
  head.writeUInt16BE(ips.length, 6);
  const recs = ips.map((ip) => {
    const r = Buffer.alloc(16);
    r.writeUInt16BE(0xc00c, 0); // the question's name
    r.writeUInt16BE(QTYPE.A, 2);
    r.writeUInt16BE(1, 4);
    r.writeUInt32BE(ttl, 6);
    r.writeUInt16BE(4, 10);
    for (const [i, b] of ip.split('.').entries()) r.writeUInt8(Number(b), 12 + i);
    return r;
  });
  return Buffer.concat([head, ...recs]);
}

/** The largest answer a UDP client takes: its EDNS(0) OPT record's payload size (RFC 6891), else 512. */
export function udpAnswerLimit(query: Buffer, q: Question): number {
  try {
    const an = query.readUInt16BE(6);
    const ns = query.readUInt16BE(8);
    const ar = query.readUInt16BE(10);
    let off = q.end;
    for (let i = 0; i < an + ns + ar; i++) {
      off = readName(query, off).next;
      if (off + 10 > query.length) return 512;
      if (i >= an + ns && query.readUInt16BE(off) === 41) return Math.max(512, query.readUInt16BE(off + 2));
      off += 10 + query.readUInt16BE(off + 8);
    }
  } catch {
    /* a malformed additional section: the classic limit */
  }
  return 512;
}

/** Whether a response has its TC (truncated) bit set: the client should ask again over TCP. */
export function isTruncated(buf: Buffer): boolean {
  return buf.length >= 4 && (buf.readUInt16BE(2) & 0x0200) !== 0;
}

/** A response cut to its header and question with TC set (RFC 1035 §4.2.1, RFC 7766): ask again over TCP. */
export function truncatedAnswer(query: Buffer, q: Question, response: Buffer): Buffer {
  const out = emptyAnswer(query, q, response.readUInt16BE(2) & 0xf);
  out.writeUInt16BE(out.readUInt16BE(2) | 0x0200, 2);
  return out;
}
