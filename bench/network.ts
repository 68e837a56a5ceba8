/**
 * Sandbox networking (issue 16), as rows of the report, against the test internet of
 * test/net/fake-internet.ts (a network namespace on this machine: nothing leaves it):
 * - create cost: pooled creates with `allowlist` beside pooled creates with `none`, taking turns,
 *   in one service (target: at most 10 ms more);
 * - throughput: one 256 MB HTTP download by a sandbox, by address (kernel forwarding + NAT) and by
 *   name (through kiln's TLS/HTTP gate), beside the same download over loopback inside the test
 *   namespace (the loopback-class baseline, same client program).
 * Alone, as root: `node --import tsx bench/network.ts [--samples 20]`.
 */
import { execFileSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { NAMES, RAW_ALLOWED, startFakeInternet } from '../test/net/fake-internet.js';
import { startServerProcess, waitPoolFull } from './server.js';
import { argValue, percentile, type Row, ratio } from './stats.js';

const CREATE_TARGET_MS = 10;
const BYTES = 256 << 20;
/** Fraction of the loopback baseline the forwarded path should reach. */
const THROUGHPUT_TARGET = 0.5;

// The same client everywhere: raw HTTP/1.0 over a socket, read in 1 MiB chunks, MB/s printed.
const CLIENT = String.raw`
import socket, sys, time
host, ip, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.monotonic()
s = socket.create_connection((ip, 80), timeout=30)
s.sendall(('GET /bytes/%d HTTP/1.0\r\nHost: %s\r\n\r\n' % (n, host)).encode())
got = 0
while True:
    b = s.recv(1 << 20)
    if not b: break
    got += len(b)
dt = time.monotonic() - t
if got < n: raise SystemExit('short read: %d of %d' % (got, n))
print(n / dt / 1e6)
`;

export async function benchNetwork(o: { samples: number }): Promise<Row[]> {
  const net = await startFakeInternet();
  try {
    const env = net.env();
    const srv = await startServerProcess({ ...env, KILN_POOL: 'python=4', KILN_MAX_SANDBOXES: '32' });
    try {
      const kiln = srv.client;
      const none: number[] = [];
      const allow: number[] = [];
      const network = { policy: 'allowlist' as const, allow: ['allowed.example', `${RAW_ALLOWED}/32`] };
      for (let i = 0; i < o.samples + 2; i++) {
        for (const mode of ['none', 'allowlist'] as const) {
          await waitPoolFull(kiln, 4);
          const t0 = performance.now();
          const sb = await kiln.sandboxes.create({ pack: 'python', ...(mode === 'allowlist' ? { network } : {}) });
          const ms = performance.now() - t0;
          await kiln.sandboxes.delete(sb.id);
          if (i >= 2) (mode === 'none' ? none : allow).push(ms);
        }
      }
      const sb = await kiln.sandboxes.create({ pack: 'python', network });
      const mbps: Record<'direct' | 'gate' | 'loopback', number[]> = { direct: [], gate: [], loopback: [] };
      try {
        await kiln.sandboxes.writeFile(sb.id, '/tmp/dl.py', CLIENT);
        await kiln.sandboxes.exec(sb.id, { cmd: ['python3', '-c', 'import socket; socket.gethostbyname("allowed.example")'] });
        for (let i = 0; i < 3; i++) {
          for (const [kind, host, ip] of [
            ['direct', RAW_ALLOWED, RAW_ALLOWED],
            ['gate', 'allowed.example', NAMES['allowed.example']],
          ] as const) {
            const r = await kiln.sandboxes.exec(sb.id, { cmd: ['python3', '/tmp/dl.py', host, ip, String(BYTES)], timeoutMs: 120_000 });
            if (r.exitCode !== 0) throw new Error(`download (${kind}) failed: ${r.stderr}`);
            mbps[kind].push(Number(r.stdout));
          }
          const out = execFileSync('ip', ['netns', 'exec', `ktwan${net.tag}`, 'python3', '-c', CLIENT, RAW_ALLOWED, RAW_ALLOWED, String(BYTES)], { encoding: 'utf8' });
          mbps.loopback.push(Number(out));
        }
      } finally {
        await kiln.sandboxes.delete(sb.id);
      }
      const n50 = percentile(none, 50);
      const a50 = percentile(allow, 50);
      const lo = percentile(mbps.loopback, 50);
      const rows: Row[] = [
        { group: 'network', name: 'pooled create, network none (HTTP create, pool hit)', p50: n50, p99: percentile(none, 99), note: `n=${none.length}, the baseline of the row below` },
        {
          group: 'network',
          name: 'pooled create, network allowlist (address, veth, firewall chain)',
          p50: a50,
          p99: percentile(allow, 99),
          vsBaseline: `+${(a50 - n50).toFixed(1)} ms`,
          target: `≤ +${CREATE_TARGET_MS} ms vs none`,
          met: a50 - n50 <= CREATE_TARGET_MS,
          note: `n=${allow.length}`,
        },
        { group: 'network', name: '256 MB HTTP download over loopback in the test namespace', value: lo, unit: 'MB/s', note: 'the baseline of the rows below (same client)' },
      ];
      for (const [kind, label] of [
        ['direct', 'sandbox download by address (forwarded, NAT)'],
        ['gate', "sandbox download by name (through kiln's HTTP gate)"],
      ] as const) {
        const v = percentile(mbps[kind], 50);
        rows.push({
          group: 'network',
          name: label,
          value: v,
          unit: 'MB/s',
          vsBaseline: ratio(v, lo),
          ...(kind === 'direct' ? { target: `≥ ${THROUGHPUT_TARGET}× loopback`, met: v >= THROUGHPUT_TARGET * lo } : {}),
          note: `n=${mbps[kind].length}`,
        });
      }
      return rows;
    } finally {
      await srv.close();
    }
  } finally {
    await net.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchNetwork({ samples: Number(argValue('--samples') ?? 20) }).then(
    (rows) => {
      for (const r of rows)
        console.log(
          `${r.name.padEnd(66)} ${r.p50 !== undefined ? `p50 ${r.p50.toFixed(2)} ms p99 ${r.p99!.toFixed(2)} ms` : `${r.value!.toFixed(0)} ${r.unit}`}  ${r.vsBaseline ?? ''}  ${r.target ? `${r.target}: ${r.met ? 'met' : 'MISSED'}` : ''}  ${r.note ?? ''}`,
        );
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
