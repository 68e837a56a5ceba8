/**
 * QEMU backend numbers for the bench table: cold boot to ready, template clone to ready (p50/p95;
 * requests `gapMs` apart so the background spare is back, and back to back, when it is not),
 * exec round trip of `true`, PSS per idle clone, and the accelerator used. The lead's bench runner
 * imports benchQemu(); run alone with `node --import tsx bench/qemu.ts`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import type { KilnClient } from '../sdk/src/index.js';
import { type AccelMode, createQemuBackend } from '../src/backends/qemu/index.js';
import { QmpClient } from '../src/backends/qemu/qmp.js';
import type { BackendSandbox, PackImage } from '../src/core/backend.js';
import { REPO_ROOT } from '../src/core/config.js';
import { resolveImage } from '../src/images/index.js';
import { buildVmArtifacts } from '../src/vmimage/index.js';
import { startServerProcess, waitPoolFull } from './server.js';
import { percentile, type Row, ratio } from './stats.js';

export interface BenchQemuOptions {
  /** Samples per measurement (clones; execs are twice this). */
  samples?: number;
  /** Where the pack images are (default KILN_DATA_DIR or /var/lib/kiln). */
  dataDir?: string;
  /** Defaults to the `shell` pack from `dataDir`. */
  pack?: PackImage;
  agentPath?: string;
  accel?: AccelMode;
  coldBoots?: number;
  clones?: number;
  execs?: number;
  memoryMib?: number;
  /** Pause before each measured clone, so the background spare is back (default 200 ms). */
  gapMs?: number;
  /** Spare QEMUs per template (backend default when undefined; 0 measures without spares). */
  spares?: number;
  log?: (line: string) => void;
}

export async function benchQemu(opts: BenchQemuOptions = {}): Promise<Row[]> {
  const log = opts.log ?? (() => undefined);
  const pack = opts.pack ?? (await defaultPack(opts.dataDir));
  const samples = opts.samples ?? 10;
  const base = await mkdtemp(join(tmpdir(), 'kiln-bench-qemu-'));
  const common = {
    dataDir: join(base, 'data'),
    runDir: join(base, 'run'),
    shmDir: join('/dev/shm', base.split('/').pop()!),
    agentPath: opts.agentPath ?? resolve(REPO_ROOT, 'build/kiln-agent'),
    accel: opts.accel ?? 'auto',
  };
  const spec = (id: string) => ({ id, pack, cpus: 1, memoryMib: opts.memoryMib ?? 256, diskMib: 256 });
  const ready = { readyTimeoutMs: 120_000 };
  const cold = createQemuBackend({ ...common, templates: false });
  const warm = createQemuBackend({ ...common, spares: opts.spares });
  const gapMs = opts.gapMs ?? 200;
  const live: BackendSandbox[] = [];
  const rows: Row[] = [];
  try {
    const probe = await warm.probe();
    if (!probe.available) throw new Error(`qemu backend unavailable: ${probe.reason}`);
    rows.push({ group: 'qemu', name: 'accelerator', note: `${String(probe.info?.accel)}: ${String(probe.info?.accelReason ?? '')}` });

    // The guest kernel + initramfs are built once per agent binary: not part of any boot.
    await buildVmArtifacts({ dataDir: common.dataDir, agentPath: common.agentPath });
    const coldMs: number[] = [];
    const coldBlocks: number[] = [];
    for (let i = 0; i < (opts.coldBoots ?? Math.min(5, samples)); i++) {
      const t0 = performance.now();
      const sb = await cold.create(spec(`cold${i}`), ready);
      coldMs.push(performance.now() - t0);
      if (probe.info?.accel === 'tcg') coldBlocks.push(await translatedBlocks(join(common.runDir, 'qemu/vms', `cold${i}`, 'qmp.sock')));
      await sb.destroy();
      log(`cold boot ${i + 1}: ${coldMs.at(-1)!.toFixed(0)} ms`);
    }
    rows.push({
      group: 'qemu',
      name: 'cold boot to ready',
      p50: percentile(coldMs, 50),
      p99: percentile(coldMs, 99),
      target: probe.info?.accel === 'tcg' ? '≤ 1.8 s (TCG)' : undefined,
      met: percentile(coldMs, 50) <= 1800,
      note: `n=${coldMs.length}`,
    });
    // The machine-independent part of a TCG boot (this machine's speed varies ±50% run to run).
    if (coldBlocks.length)
      rows.push({ group: 'qemu', name: 'guest blocks translated per cold boot (TCG, up to ready)', value: percentile(coldBlocks, 50), unit: 'TBs', note: 'median, from QEMU "info jit"' });

    const t0 = performance.now();
    live.push(await warm.create(spec('first'), ready));
    rows.push({ group: 'qemu', name: 'template boot + first clone', value: performance.now() - t0, unit: 'ms', note: 'once per pack and shape' });
    const cloneMs: number[] = [];
    const blocks: number[] = [];
    for (let i = 0; i < (opts.clones ?? samples); i++) {
      await sleep(gapMs);
      const c0 = performance.now();
      live.push(await warm.create(spec(`clone${i}`), ready));
      cloneMs.push(performance.now() - c0);
      if (probe.info?.accel === 'tcg') blocks.push(await translatedBlocks(join(common.runDir, 'qemu/vms', `clone${i}`, 'qmp.sock')));
      log(`clone ${i + 1}: ${cloneMs.at(-1)!.toFixed(0)} ms ${JSON.stringify(live.at(-1)!.details.steps)}`);
    }
    rows.push({
      group: 'qemu',
      name: 'template clone to ready',
      p50: percentile(cloneMs, 50),
      p99: percentile(cloneMs, 99),
      target: probe.info?.accel === 'tcg' ? 'p50 ≤ 80 ms (TCG)' : undefined,
      met: percentile(cloneMs, 50) <= 80,
      note: `p95 ${percentile(cloneMs, 95).toFixed(0)} ms, n=${cloneMs.length}, ${gapMs} ms apart, includes RNG reseed + clock sync`,
    });
    // Under TCG a clone's cost is the guest code it runs for the first time (its QEMU starts with
    // an empty translation cache): the block count is the machine-independent part of the number.
    if (blocks.length) rows.push({ group: 'qemu', name: 'guest blocks translated per clone (TCG, up to ready)', value: percentile(blocks, 50), unit: 'TBs', note: `median, from QEMU "info jit"` });
    // Back to back: the spare a clone used is still being replaced when the next one comes.
    const burstMs: number[] = [];
    const burst: BackendSandbox[] = [];
    for (let i = 0; i < Math.min(5, opts.clones ?? samples); i++) {
      const c0 = performance.now();
      burst.push(await warm.create(spec(`burst${i}`), ready));
      burstMs.push(performance.now() - c0);
    }
    await Promise.allSettled(burst.map((s) => s.destroy()));
    rows.push({ group: 'qemu', name: 'template clone to ready, back to back', p50: percentile(burstMs, 50), p99: percentile(burstMs, 99), note: `n=${burstMs.length}` });

    const execMs: number[] = [];
    const sb = live[0]!;
    for (let i = 0; i < (opts.execs ?? samples * 2); i++) {
      const e0 = performance.now();
      await sb.agent.exec({ argv: ['true'] }).result;
      execMs.push(performance.now() - e0);
    }
    rows.push({ group: 'qemu', name: 'exec `true` round trip', p50: percentile(execMs, 50), p99: percentile(execMs, 99), note: `n=${execMs.length}` });
    const pings: number[] = [];
    for (let i = 0; i < 50; i++) pings.push((await sb.agent.ping()).rttMs);
    rows.push({ group: 'qemu', name: 'agent ping round trip', p50: percentile(pings, 50), p99: percentile(pings, 99), note: `n=${pings.length}` });

    await sleep(1000); // let the clones go idle
    const pss: number[] = [];
    for (const s of live.slice(1)) {
      const kb = /^Pss:\s+(\d+) kB/m.exec(await readFile(`/proc/${s.details.pid as number}/smaps_rollup`, 'utf8').catch(() => ''));
      if (kb) pss.push(Number(kb[1]) / 1024);
    }
    if (pss.length)
      rows.push({
        group: 'qemu',
        name: 'PSS per idle clone (mean)',
        value: pss.reduce((a, b) => a + b, 0) / pss.length,
        unit: 'MiB',
        target: '≤ 40 MB',
        met: (pss.reduce((a, b) => a + b, 0) / pss.length) * 2 ** 20 <= 40e6,
        note: `${live.length} clones alive, ${opts.memoryMib ?? 256} MiB sandboxes`,
      });
    return rows;
  } finally {
    await Promise.allSettled(live.map((s) => s.destroy()));
    await Promise.allSettled([cold.close(), warm.close()]);
    await rm(base, { recursive: true, force: true });
  }
}

/** TBs in the VM's translation cache (HMP `info jit` over a fresh QMP connection). */
async function translatedBlocks(qmpSock: string): Promise<number> {
  const qmp = await QmpClient.connect(qmpSock, { timeoutMs: 5000 });
  try {
    return await jitBlocks(qmp);
  } finally {
    qmp.close();
  }
}

/** TBs in the VM's translation cache now (HMP `info jit`). */
export async function jitBlocks(qmp: QmpClient): Promise<number> {
  const out = (await qmp.execute('human-monitor-command', { 'command-line': 'info jit' })) as string;
  return Number(/TB count\s+(\d+)/.exec(out)?.[1] ?? NaN);
}

async function defaultPack(dataDir = process.env.KILN_DATA_DIR ?? '/var/lib/kiln'): Promise<PackImage> {
  const img = await resolveImage('shell', dataDir);
  return { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env, run: img.run };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await benchQemu({ log: (l) => console.error(l) });
  const { mergeRuns, renderTable } = await import('./stats.js');
  console.log(renderTable(mergeRuns([rows]), 1));
}

/**
 * `/v1/run` on the qemu backend through the service (its own process, as users run it): from a
 * warm pool (its member has run the pack's program once, so its QEMU has translated that path),
 * and from a template clone without a pool. Runs are spaced so the pool's replacement is ready.
 */
export async function benchQemuRuns(o: { dataDir: string; samples: number; bareMs?: number; log?: (line: string) => void }): Promise<Row[]> {
  const rows: Row[] = [];
  const vsBare = (ms: number[]) => (o.bareMs ? `${ratio(percentile(ms, 50), o.bareMs)} bare` : undefined);
  const runs = async (kiln: KilnClient, n: number, gapMs: number): Promise<number[]> => {
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      await sleep(gapMs);
      const t0 = performance.now();
      const r = await kiln.run({ pack: 'python', code: 'print(1)' });
      ms.push(performance.now() - t0);
      if (r.stdout !== '1\n') throw new Error(`bad output ${JSON.stringify(r)}`);
    }
    return ms;
  };
  const common = { KILN_DATA_DIR: o.dataDir, KILN_BACKEND: 'qemu' };
  let srv = await startServerProcess({ ...common, KILN_POOL: 'python=1' });
  try {
    await waitPoolFull(srv.client, 1);
    const ms = await runs(srv.client, o.samples, 2500);
    rows.push({
      group: 'qemu',
      name: '/v1/run python print(1), pooled',
      p50: percentile(ms, 50),
      p99: percentile(ms, 99),
      vsBaseline: vsBare(ms),
      note: `n=${ms.length}, 2.5 s apart (the pool replaces each member after its run)`,
    });
  } finally {
    await srv.close();
  }
  srv = await startServerProcess({ ...common, KILN_POOL: '' });
  try {
    await runs(srv.client, 1, 0); // boots the template
    const ms = await runs(srv.client, Math.max(3, Math.floor(o.samples / 2)), 500);
    rows.push({
      group: 'qemu',
      name: '/v1/run python print(1), template clone (no pool)',
      p50: percentile(ms, 50),
      p99: percentile(ms, 99),
      vsBaseline: vsBare(ms),
      note: `n=${ms.length}; the clone's first python3 is translated afresh`,
    });
  } finally {
    await srv.close();
  }
  return rows;
}
