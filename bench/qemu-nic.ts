/**
 * What a VM's NIC costs: the same creates on two QEMU backends, one with `network: false`, in
 * alternation (so host load hits both alike): clones from a spare, clones without spares (QEMU's
 * start and the TAP on the path), cold boots; and connectNetwork's rename + up + net.config.
 * Connected TAPs are up on no bridge with no address: nothing is routed anywhere.
 *
 *   node --import tsx bench/qemu-nic.ts [--clones 10] [--boots 5]
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createQemuBackend } from '../src/backends/qemu/index.js';
import type { Backend, PackImage } from '../src/core/backend.js';
import { REPO_ROOT } from '../src/core/config.js';
import { resolveImage } from '../src/images/index.js';
import { argValue, percentile } from './stats.js';

const clones = Number(argValue('--clones') ?? 10);
const boots = Number(argValue('--boots') ?? 5);
const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
const pack: PackImage = { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env, run: img.run };
const base = await mkdtemp(join(tmpdir(), 'kiln-nic-bench-'));
const backends: Backend[] = [];
let n = 0;

function backend(name: string, o: { network: boolean; spares?: number; templates?: boolean }): Backend {
  const b = createQemuBackend({ dataDir: join(base, 'data'), runDir: join(base, name), shmDir: join(base, `shm-${name}`), agentPath: resolve(REPO_ROOT, 'build/kiln-agent'), ...o });
  backends.push(b);
  return b;
}

/** One create (and for a networked one its connectNetwork): [ready ms, connect ms]. */
async function once(b: Backend, key: 'restoreMs' | 'bootMs', connect: boolean): Promise<[number, number]> {
  const id = `nic-${++n}`;
  const sb = await b.create({ id, pack, cpus: 1, memoryMib: 256, diskMib: 64 }, { readyTimeoutMs: 90_000 });
  try {
    let connectMs = Number.NaN;
    if (connect) {
      const t0 = performance.now();
      await sb.connectNetwork!({ hostIf: `ktbench${n}`, mac: '02:6b:00:00:00:02', address: '10.231.9.2', prefix: 24, gateway: '10.231.9.1', dns: ['10.231.9.1'] });
      connectMs = performance.now() - t0;
      if (process.argv.includes('--verbose')) console.log(JSON.stringify(sb.details.network));
    }
    return [Number(sb.details[key]), connectMs];
  } finally {
    await sb.destroy();
  }
}

async function compare(what: string, count: number, key: 'restoreMs' | 'bootMs', o: { spares?: number; templates?: boolean }): Promise<void> {
  const on = backend(`${what}-on`, { network: true, ...o });
  const off = backend(`${what}-off`, { network: false, ...o });
  // The first create of each builds its template (or the VM artifacts): not measured.
  await once(on, key, false);
  await once(off, key, false);
  const with_: number[] = [];
  const without: number[] = [];
  const connects: number[] = [];
  for (let i = 0; i < count; i++) {
    const [ms, c] = await once(on, key, true);
    with_.push(ms);
    connects.push(c);
    without.push((await once(off, key, false))[0]);
    // Let a spare come back before the next clone, as in steady use.
    if (o.spares) await new Promise((r) => setTimeout(r, 1500));
  }
  const p50 = (xs: number[]) => Math.round(percentile(xs, 50) * 10) / 10;
  console.log(`${what}: ${key} median with NIC ${p50(with_)} ms, without ${p50(without)} ms (${count} each); connectNetwork median ${p50(connects)} ms`);
  console.log(`  with:    ${with_.map(Math.round).join(' ')}\n  without: ${without.map(Math.round).join(' ')}`);
}

try {
  await compare('clone-from-spare', clones, 'restoreMs', { spares: 1 });
  await compare('clone-no-spare', clones, 'restoreMs', { spares: 0 });
  await compare('cold-boot', boots, 'bootMs', { templates: false });
} finally {
  await Promise.allSettled(backends.map((b) => b.close()));
  await rm(base, { recursive: true, force: true });
}
