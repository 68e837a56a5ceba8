/**
 * QEMU backend numbers for the bench table: cold boot to ready, template clone to ready (p50/p95),
 * exec round trip of `true`, PSS per idle clone, and the accelerator used. The lead's bench runner
 * imports benchQemu(); run alone with `node --import tsx bench/qemu.ts`.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import type { BackendSandbox, PackImage } from '../src/core/backend.js';
import { REPO_ROOT } from '../src/core/config.js';
import { resolveImage } from '../src/images/index.js';
import { createQemuBackend, type AccelMode } from '../src/backends/qemu/index.js';

export interface Row {
  backend: 'qemu';
  metric: string;
  value: number | string;
  unit: string;
  /** Samples behind the value. */
  n?: number;
  note?: string;
}

export interface BenchQemuOptions {
  /** Defaults to the `shell` pack from KILN_DATA_DIR (/var/lib/kiln). */
  pack?: PackImage;
  agentPath?: string;
  accel?: AccelMode;
  coldBoots?: number;
  clones?: number;
  execs?: number;
  memoryMib?: number;
  log?: (line: string) => void;
}

export async function benchQemu(opts: BenchQemuOptions = {}): Promise<Row[]> {
  const log = opts.log ?? (() => undefined);
  const pack = opts.pack ?? await defaultPack();
  const base = await mkdtemp(join(tmpdir(), 'kiln-bench-qemu-'));
  const common = {
    dataDir: join(base, 'data'), runDir: join(base, 'run'), shmDir: join('/dev/shm', base.split('/').pop()!),
    agentPath: opts.agentPath ?? resolve(REPO_ROOT, 'build/kiln-agent'), accel: opts.accel ?? 'auto',
  };
  const spec = (id: string) => ({ id, pack, cpus: 1, memoryMib: opts.memoryMib ?? 256, diskMib: 256 });
  const ready = { readyTimeoutMs: 120_000 };
  const cold = createQemuBackend({ ...common, templates: false });
  const warm = createQemuBackend(common);
  const live: BackendSandbox[] = [];
  const rows: Row[] = [];
  try {
    const probe = await warm.probe();
    if (!probe.available) throw new Error(`qemu backend unavailable: ${probe.reason}`);
    rows.push({ backend: 'qemu', metric: 'accel', value: String(probe.info?.accel), unit: '', note: String(probe.info?.accelReason ?? '') });

    const coldMs: number[] = [];
    for (let i = 0; i < (opts.coldBoots ?? 3); i++) {
      const t0 = performance.now();
      const sb = await cold.create(spec(`cold${i}`), ready);
      coldMs.push(performance.now() - t0);
      await sb.destroy();
      log(`cold boot ${i + 1}: ${coldMs.at(-1)!.toFixed(0)} ms`);
    }
    rows.push({ backend: 'qemu', metric: 'cold boot to ready (p50)', value: round(pct(coldMs, 50)), unit: 'ms', n: coldMs.length });

    const t0 = performance.now();
    live.push(await warm.create(spec('first'), ready));
    rows.push({ backend: 'qemu', metric: 'template boot + first clone', value: round(performance.now() - t0), unit: 'ms', n: 1 });
    const cloneMs: number[] = [];
    for (let i = 0; i < (opts.clones ?? 10); i++) {
      const c0 = performance.now();
      live.push(await warm.create(spec(`clone${i}`), ready));
      cloneMs.push(performance.now() - c0);
      log(`clone ${i + 1}: ${cloneMs.at(-1)!.toFixed(0)} ms`);
    }
    rows.push({ backend: 'qemu', metric: 'clone to ready (p50)', value: round(pct(cloneMs, 50)), unit: 'ms', n: cloneMs.length });
    rows.push({ backend: 'qemu', metric: 'clone to ready (p95)', value: round(pct(cloneMs, 95)), unit: 'ms', n: cloneMs.length });

    const execMs: number[] = [];
    const sb = live[0]!;
    for (let i = 0; i < (opts.execs ?? 20); i++) {
      const e0 = performance.now();
      await sb.agent.exec({ argv: ['true'] }).result;
      execMs.push(performance.now() - e0);
    }
    rows.push({ backend: 'qemu', metric: 'exec `true` round trip (p50)', value: round(pct(execMs, 50)), unit: 'ms', n: execMs.length });
    const pings: number[] = [];
    for (let i = 0; i < 50; i++) pings.push((await sb.agent.ping()).rttMs);
    rows.push({ backend: 'qemu', metric: 'agent ping round trip (p50)', value: round(pct(pings, 50), 2), unit: 'ms', n: pings.length });

    await sleep(1000); // let the clones go idle
    const pss: number[] = [];
    for (const s of live.slice(1)) {
      const kb = /^Pss:\s+(\d+) kB/m.exec(await readFile(`/proc/${s.details.pid as number}/smaps_rollup`, 'utf8').catch(() => ''));
      if (kb) pss.push(Number(kb[1]) / 1024);
    }
    if (pss.length) rows.push({ backend: 'qemu', metric: 'PSS per idle clone (mean)', value: round(pss.reduce((a, b) => a + b, 0) / pss.length, 1), unit: 'MiB', n: pss.length, note: `${live.length} clones alive` });
    return rows;
  } finally {
    await Promise.allSettled(live.map((s) => s.destroy()));
    await Promise.allSettled([cold.close(), warm.close()]);
    await rm(base, { recursive: true, force: true });
  }
}

async function defaultPack(): Promise<PackImage> {
  const img = await resolveImage('shell', process.env.KILN_DATA_DIR ?? '/var/lib/kiln');
  return { name: img.name, hash: img.hash, imagePath: img.imagePath, env: img.env };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

function round(x: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const rows = await benchQemu({ log: (l) => console.error(l) });
  console.table(rows);
}
