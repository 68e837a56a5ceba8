/**
 * The test "internet", run inside the test's uplink network namespace (fake-internet.ts starts it):
 * a DNS server, and HTTP and HTTPS servers on every address of NAMES, which answer with the Host
 * or SNI they were asked for and the address that served it. Prints "ready" when listening.
 * argv: <config JSON>.
 */
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { buildAnswer, emptyAnswer, parseQuery, QTYPE, RCODE } from '../../src/net/dns-wire.js';

interface Config {
  dns: string;
  names: Record<string, string>;
  addresses: string[];
  cert: string;
  key: string;
}

const c = JSON.parse(process.argv[2]!) as Config;
const dns = dgram.createSocket('udp4');
dns.on('message', (m, r) => {
  try {
    const q = parseQuery(m);
    const ip = c.names[q.name];
    const out = q.type === QTYPE.A && ip ? buildAnswer(m, q, [ip], 5) : emptyAnswer(m, q, ip ? RCODE.NOERROR : RCODE.NXDOMAIN);
    dns.send(out, r.port, r.address);
  } catch {
    /* not a query */
  }
});
const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
  const chunks: Buffer[] = [];
  req.on('data', (b: Buffer) => chunks.push(b));
  req.on('end', () => {
    const big = /^\/bytes\/(\d+)$/.exec(req.url ?? '');
    if (big) {
      res.setHeader('content-length', big[1]!);
      res.end(Buffer.alloc(Number(big[1])));
      return;
    }
    const local = (req.socket.address() as AddressInfo).address;
    const sni = (req.socket as { servername?: string }).servername;
    res.setHeader('content-type', 'text/plain');
    res.end(`host=${req.headers.host} sni=${sni ?? '-'} at=${local} path=${req.url} body=${Buffer.concat(chunks).length}\n`);
  });
};
const tls = { cert: readFileSync(c.cert), key: readFileSync(c.key) };
const servers: Array<Promise<void>> = [new Promise((r) => dns.bind(53, c.dns, () => r()))];
for (const a of c.addresses) {
  servers.push(new Promise((r) => http.createServer(handler).listen(80, a, () => r())));
  servers.push(new Promise((r) => https.createServer(tls, handler).listen(443, a, () => r())));
  // A plain TCP port (for name:port and CIDR:port rules): echoes a greeting.
  servers.push(new Promise((r) => http.createServer(handler).listen(5432, a, () => r())));
}
await Promise.all(servers);
process.stdout.write('ready\n');
