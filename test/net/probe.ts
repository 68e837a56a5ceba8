/**
 * A probe run inside a sandbox (python3, standard library only): tries each network action it is
 * given and prints one JSON line per action with what happened and how long it took, so a test can
 * check both the verdict and that a refusal was fast.
 */
import type { KilnClient } from '../../sdk/src/index.js';

export type Probe =
  | { kind: 'dns'; name: string }
  | { kind: 'http'; url: string; ca?: boolean }
  | { kind: 'tcp'; host: string; port: number }
  /** A TLS handshake with `sni` to `ip`:443, then GET /. */
  | { kind: 'tls'; ip: string; sni: string }
  /** GET / to `ip`:80 with this Host header. */
  | { kind: 'host'; ip: string; host: string }
  /** DNS over TCP to `server`:53, the A query of each name on one connection: "name:rcode:addresses" each. */
  | { kind: 'dnstcp'; server: string; names: string[] };

export interface ProbeResult {
  ok: boolean;
  out: string;
  ms: number;
}

const SCRIPT = String.raw`
import json, socket, ssl, sys, time, urllib.request
CA = '/tmp/ca.pem'
def run(p):
    k = p['kind']
    if k == 'dns':
        return socket.gethostbyname(p['name'])
    if k == 'http':
        ctx = ssl.create_default_context(cafile=CA) if p.get('ca') else None
        with urllib.request.urlopen(p['url'], timeout=8, context=ctx) as r:
            return r.read().decode()
    if k == 'tcp':
        s = socket.create_connection((p['host'], p['port']), timeout=8); s.close(); return 'connected'
    if k == 'tls':
        ctx = ssl.create_default_context(cafile=CA)
        raw = socket.create_connection((p['ip'], 443), timeout=8)
        s = ctx.wrap_socket(raw, server_hostname=p['sni'])
        s.sendall(('GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % p['sni']).encode())
        return s.recv(4096).decode()
    if k == 'host':
        s = socket.create_connection((p['ip'], 80), timeout=8)
        s.sendall(('GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % p['host']).encode())
        data = s.recv(4096).decode()
        if not data: raise ConnectionError('closed without an answer')
        return data
    if k == 'dnstcp':
        s = socket.create_connection((p['server'], 53), timeout=8)
        qs = []
        for i, n in enumerate(p['names']):
            q = bytes([0, i + 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]) + b''.join(bytes([len(l)]) + l.encode() for l in n.split('.')) + bytes([0, 0, 1, 0, 1])
            qs.append(len(q).to_bytes(2, 'big') + q)
        s.sendall(b''.join(qs))
        buf, out = b'', []
        for n in p['names']:
            while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], 'big'):
                d = s.recv(4096)
                if not d: raise ConnectionError('closed before an answer')
                buf += d
            m, buf = buf[2:2 + int.from_bytes(buf[:2], 'big')], buf[2 + int.from_bytes(buf[:2], 'big'):]
            off = 12
            while m[off]: off += 1 + m[off]
            off += 5
            ips = []
            for _ in range(int.from_bytes(m[6:8], 'big')):
                off += 2 if m[off] >= 0xc0 else 0
                typ, rdlen = int.from_bytes(m[off:off + 2], 'big'), int.from_bytes(m[off + 8:off + 10], 'big')
                if typ == 1: ips.append('.'.join(str(b) for b in m[off + 10:off + 14]))
                off += 10 + rdlen
            out.append('%s:%d:%s' % (n, m[3] & 15, ','.join(ips)))
        s.close()
        return ' '.join(out)
for p in json.loads(sys.argv[1]):
    t = time.monotonic()
    try:
        out, ok = run(p), True
    except Exception as e:
        out, ok = '%s: %s' % (type(e).__name__, e), False
    print(json.dumps({'ok': ok, 'out': str(out)[:300], 'ms': round((time.monotonic() - t) * 1000)}), flush=True)
`;

/** Runs the probes in sandbox `id` (the CA the fake internet made at /tmp/ca.pem) and answers one result each. */
export async function probe(client: KilnClient, id: string, probes: Probe[], caPem?: string): Promise<ProbeResult[]> {
  if (caPem) await client.sandboxes.writeFile(id, '/tmp/ca.pem', caPem);
  await client.sandboxes.writeFile(id, '/tmp/probe.py', SCRIPT);
  const r = await client.sandboxes.exec(id, { cmd: ['python3', '/tmp/probe.py', JSON.stringify(probes)], timeoutMs: 120_000 });
  if (r.exitCode !== 0) throw new Error(`probe failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as ProbeResult);
}
