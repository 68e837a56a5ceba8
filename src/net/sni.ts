/**
 * The name a connection asks for, from its first bytes: the server_name of a TLS ClientHello or the
 * Host header of an HTTP/1 request. Both parsers are incremental: `need-more` until enough bytes.
 */
export type Sniffed = { kind: 'name'; name: string } | { kind: 'need-more' } | { kind: 'none'; reason: string };

const MAX_HELLO = 16 * 1024;
const MAX_HEAD = 16 * 1024;

/** The SNI of the ClientHello at the start of `b` (a TLS record stream). */
export function sniffTls(b: Buffer): Sniffed {
  if (b.length < 5) return { kind: 'need-more' };
  if (b[0] !== 0x16) return { kind: 'none', reason: 'not a TLS handshake' };
  const recLen = b.readUInt16BE(3);
  if (recLen > MAX_HELLO) return { kind: 'none', reason: 'ClientHello too large' };
  if (b.length < 5 + recLen) return { kind: 'need-more' };
  // The ClientHello fits in one record in practice (it is < 16 KiB); one spread over records is refused.
  let o = 5;
  if (b[o] !== 0x01) return { kind: 'none', reason: 'not a ClientHello' };
  const helloEnd = Math.min(5 + recLen, o + 4 + ((b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!));
  o += 4 + 2 + 32; // type+length, version, random
  if (o >= helloEnd) return { kind: 'none', reason: 'truncated ClientHello' };
  o += 1 + b[o]!; // session id
  if (o + 2 > helloEnd) return { kind: 'none', reason: 'truncated ClientHello' };
  o += 2 + b.readUInt16BE(o); // cipher suites
  if (o + 1 > helloEnd) return { kind: 'none', reason: 'truncated ClientHello' };
  o += 1 + b[o]!; // compression methods
  if (o + 2 > helloEnd) return { kind: 'none', reason: 'ClientHello without extensions (no SNI)' };
  const extEnd = Math.min(helloEnd, o + 2 + b.readUInt16BE(o));
  o += 2;
  while (o + 4 <= extEnd) {
    const type = b.readUInt16BE(o);
    const len = b.readUInt16BE(o + 2);
    o += 4;
    if (type === 0 && o + 5 <= extEnd) {
      // server_name_list: length, then (type 0 = host_name, length, name)
      if (b[o + 2] === 0) {
        const n = b.readUInt16BE(o + 3);
        if (o + 5 + n <= extEnd) return { kind: 'name', name: b.toString('latin1', o + 5, o + 5 + n).toLowerCase() };
      }
      return { kind: 'none', reason: 'malformed server_name' };
    }
    o += len;
  }
  return { kind: 'none', reason: 'ClientHello without SNI' };
}

/** The Host header of the HTTP/1 request head at the start of `b` (port stripped). */
export function sniffHttp(b: Buffer): Sniffed {
  const end = b.indexOf('\r\n\r\n');
  if (end < 0) return b.length > MAX_HEAD ? { kind: 'none', reason: 'request head too large' } : { kind: 'need-more' };
  const lines = b.toString('latin1', 0, end).split('\r\n');
  if (!/^[A-Z]+ \S+ HTTP\/1\.[01]$/.test(lines[0] ?? '')) return { kind: 'none', reason: 'not an HTTP/1 request' };
  const hosts = lines.slice(1).filter((l) => /^host:/i.test(l));
  if (hosts.length !== 1) return { kind: 'none', reason: hosts.length ? 'several Host headers' : 'no Host header' };
  const host = hosts[0]!.slice(5).trim().toLowerCase();
  const name = host.startsWith('[') ? host : host.replace(/:\d+$/, '');
  return name ? { kind: 'name', name } : { kind: 'none', reason: 'empty Host header' };
}
