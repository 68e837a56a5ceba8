/**
 * A test "internet" inside this machine (../shared/guides/network-testing.md): a network namespace
 * joined to the host by one veth pair, with a DNS server and HTTP/HTTPS servers on 198.18.1.x
 * addresses that exist only inside it (RFC 2544 benchmark range: obviously not real). kiln is
 * configured with the veth's host end as its uplink and that DNS server as its upstream, so a
 * wrong rule can only drop packets. close() removes the namespace and the veth, whatever happened.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export const NAMES = {
  'allowed.example': '198.18.1.10',
  'other.example': '198.18.1.10', // same address as allowed.example: only the name tells them apart
  'unlisted.example': '198.18.1.11',
  'port.example': '198.18.1.14',
  'sub.wild.example': '198.18.1.15',
} as const;
/** Reached by address only: one outside every allow rule, one inside an allowed CIDR. */
export const RAW_REFUSED = '198.18.1.12';
export const RAW_ALLOWED = '198.18.1.13';
export const DNS = '198.18.1.53';

export interface FakeInternet {
  /** The uplink kiln must use (the veth's host end) and its next hop. */
  uplink: string;
  gateway: string;
  dns: string;
  /** PEM of the CA that signed the servers' certificate (for clients in sandboxes). */
  caPem: string;
  /** A short unique tag for names the test makes (nftables table, bridge). */
  tag: string;
  env(o?: { subnet?: string }): Record<string, string>;
  close(): Promise<void>;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export async function startFakeInternet(): Promise<FakeInternet> {
  const tag = randomBytes(3).toString('hex');
  const ns = `ktwan${tag}`;
  const hostEnd = `ktw${tag}h`;
  const nsEnd = `ktw${tag}n`;
  const dir = await mkdtemp(join(tmpdir(), 'kiln-fake-internet-'));
  let server: ChildProcess | undefined;
  const close = async () => {
    server?.kill('SIGKILL');
    try {
      sh('ip', ['link', 'del', hostEnd]);
    } catch {
      /* gone with the namespace or never made */
    }
    try {
      sh('ip', ['netns', 'del', ns]);
    } catch {
      /* never made */
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    sh('ip', ['netns', 'add', ns]);
    sh('ip', ['link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', nsEnd, 'netns', ns]);
    sh('ip', ['addr', 'add', '198.18.0.1/30', 'dev', hostEnd]);
    sh('ip', ['link', 'set', hostEnd, 'up']);
    const addrs = [...new Set([...Object.values(NAMES), RAW_REFUSED, RAW_ALLOWED])];
    const inside = [`link set lo up`, `addr add 198.18.0.2/30 dev ${nsEnd}`, `link set ${nsEnd} up`, `addr add ${DNS}/32 dev lo`, ...addrs.map((a) => `addr add ${a}/32 dev lo`)];
    execFileSync('ip', ['-n', ns, '-batch', '-'], { input: `${inside.join('\n')}\n` });
    // A throwaway CA and one certificate for every name.
    const names = Object.keys(NAMES);
    const ca = join(dir, 'ca');
    sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=kiln test CA', '-keyout', `${ca}.key`, '-out', `${ca}.pem`]);
    sh('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=allowed.example', '-keyout', join(dir, 'srv.key'), '-out', join(dir, 'srv.csr')]);
    const ext = join(dir, 'ext.cnf');
    await import('node:fs/promises').then((f) => f.writeFile(ext, `subjectAltName=${names.map((n) => `DNS:${n}`).join(',')}\n`));
    sh('openssl', ['x509', '-req', '-in', join(dir, 'srv.csr'), '-CA', `${ca}.pem`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '1', '-extfile', ext, '-out', join(dir, 'srv.pem')]);
    const config = { dns: DNS, names: NAMES, addresses: addrs, cert: join(dir, 'srv.pem'), key: join(dir, 'srv.key') };
    server = spawn('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', join(import.meta.dirname, 'fake-internet-server.ts'), JSON.stringify(config)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('fake internet did not start in 20 s')), 20_000);
      createInterface({ input: server!.stdout! }).on('line', (l) => {
        if (l === 'ready') {
          clearTimeout(t);
          resolve();
        }
      });
      server!.once('exit', (code) => reject(new Error(`fake internet server exited (${code})`)));
    });
    const caPem = sh('cat', [`${ca}.pem`]);
    return {
      uplink: hostEnd,
      gateway: '198.18.0.2',
      dns: DNS,
      caPem,
      tag,
      env: (o = {}) => ({
        KILN_NET_NAME: `kt${tag}`,
        KILN_NET_SUBNET: o.subnet ?? `10.${200 + (parseInt(tag.slice(0, 2), 16) % 50)}.${parseInt(tag.slice(2, 4), 16)}.0/24`,
        KILN_NET_UPLINK: hostEnd,
        KILN_NET_UPLINK_GATEWAY: '198.18.0.2',
        KILN_NET_DNS: DNS,
        KILN_NET_ROUTE_TABLE: String(10000 + (parseInt(tag, 16) % 20000)),
        KILN_NET_PORTS: `${20000 + (parseInt(tag, 16) % 10000)},${30000 + (parseInt(tag, 16) % 10000)},${40000 + (parseInt(tag, 16) % 10000)}`,
      }),
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}

/** What of a kiln network named `name` is still on the host: links, the table, the routing rule. */
export function leftovers(name: string, subnet: string): string[] {
  const out: string[] = [];
  const links = sh('ip', ['-o', 'link', 'show']);
  for (const m of links.matchAll(/^\d+: ([^:@]+)/gm)) if (m[1] === `${name}0`) out.push(`bridge ${m[1]}`);
  const ports = (() => {
    try {
      return sh('ip', ['-o', 'link', 'show', 'master', `${name}0`]);
    } catch {
      return '';
    }
  })();
  for (const m of ports.matchAll(/^\d+: ([^:@]+)/gm)) out.push(`bridge port ${m[1]}`);
  if (sh('nft', ['list', 'tables']).includes(`inet ${name}\n`)) out.push(`nftables table inet ${name}`);
  if (sh('ip', ['-4', 'rule', 'show']).includes(`from ${subnet} `)) out.push(`ip rule from ${subnet}`);
  return out;
}
