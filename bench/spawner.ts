/**
 * What the namespace backend's spawner saves: `node --import tsx bench/spawner.ts [--sandboxes 100]
 * [--rounds 3]` (as root). The service as its own process (no pool), sandboxes created and deleted
 * through the API, serially and by 8 clients at once, with KILN_NS_SPAWNER on and off taking turns
 * in the same run: CPU ms per sandbox of the service process and of the spawner helper, and wall
 * ms per sandbox (create + delete). The median round of each is printed.
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { startServerProcess } from './server.js';
import { argValue, percentile } from './stats.js';

const CLK_TCK = 100;

function cpuMs(pid: number): number {
  const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

function children(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

interface Turn {
  service: number;
  spawner: number;
  wall: number;
}

async function turn(spawner: boolean, clients: number, sandboxes: number): Promise<Turn> {
  const srv = await startServerProcess({ KILN_POOL: '', KILN_NS_SPAWNER: spawner ? '1' : '0' });
  try {
    // The first sandbox starts the helper and mounts the image: not measured.
    const first = await srv.client.sandboxes.create({ pack: 'python' });
    await srv.client.sandboxes.delete(first.id);
    const svc = srv.pid;
    const helper = children(svc).find((k) => cmdline(k).includes('host spawner')) ?? 0;
    if (spawner && !helper) throw new Error('no spawner helper runs beside the service');
    const c0 = [cpuMs(svc), helper ? cpuMs(helper) : 0];
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: clients }, async () => {
        for (let i = 0; i < sandboxes / clients; i++) {
          const sb = await srv.client.sandboxes.create({ pack: 'python' });
          await srv.client.sandboxes.delete(sb.id);
        }
      }),
    );
    const wall = (performance.now() - t0) / sandboxes;
    const c1 = [cpuMs(svc), helper ? cpuMs(helper) : 0];
    return { service: (c1[0]! - c0[0]!) / sandboxes, spawner: (c1[1]! - c0[1]!) / sandboxes, wall };
  } finally {
    await srv.close();
  }
}

async function main(): Promise<void> {
  const sandboxes = Number(argValue('--sandboxes') ?? 100);
  const rounds = Number(argValue('--rounds') ?? 3);
  const results = new Map<string, Turn[]>();
  for (let r = 0; r < rounds; r++) {
    for (const clients of [1, 8]) {
      for (const on of [true, false]) {
        const key = `${clients}|${on ? 'on' : 'off'}`;
        results.set(key, [...(results.get(key) ?? []), await turn(on, clients, sandboxes)]);
      }
    }
  }
  const med = (ts: Turn[], k: keyof Turn) =>
    percentile(
      ts.map((t) => t[k]),
      50,
    );
  console.log(`namespace sandbox create + delete, ${sandboxes} per turn, median of ${rounds} rounds (${new Date().toISOString()})`);
  console.log('| clients | spawner | service CPU ms/sandbox | spawner CPU ms/sandbox | together | wall ms/sandbox |');
  console.log('|---|---|---|---|---|---|');
  for (const [key, ts] of results) {
    const [clients, mode] = key.split('|');
    const s = med(ts, 'service');
    const h = med(ts, 'spawner');
    console.log(`| ${clients} | ${mode} | ${s.toFixed(2)} | ${h.toFixed(2)} | ${(s + h).toFixed(2)} | ${med(ts, 'wall').toFixed(1)} |`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();
