/**
 * What the store costs on the hot path (issue 17), as rows of the report: pooled acquire and pooled
 * `/v1/run` python print(1) against a service with no store (KILN_DATABASE_URL=off), the embedded
 * PGlite and a PostgreSQL server (a private cluster in a temp dir, test/store/postgres-server.ts,
 * removed after), each its own service process, in one run. The modes take turns (`rounds` times
 * each, a fresh service per turn) so the shared machine's drift falls on all of them alike. The
 * embedded database lives in a data dir of this run's own (the images are the shared ones).
 * Alone, as root: `node --import tsx bench/store.ts [--samples 40] [--rounds 2]`.
 */
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startPostgres } from '../test/store/postgres-server.js';
import { startServerProcess, waitPoolFull } from './server.js';
import { argValue, percentile, type Row, ratio } from './stats.js';

export interface StoreBenchOptions {
  /** Samples per mode, spread over the rounds. */
  samples: number;
  rounds: number;
  dataDir: string;
}

interface Samples {
  acquire: number[];
  run: number[];
}

const MODES = ['off', 'embedded PGlite', 'PostgreSQL server'] as const;
type Mode = (typeof MODES)[number];

/** Within 5% of the store-off row of the same run (issue 17). */
const RUN_TARGET = 1.05;
const ACQUIRE_TARGET_MS = 2;

export async function benchStore(o: StoreBenchOptions): Promise<Row[]> {
  const data = await mkdtemp(join(tmpdir(), 'kiln-bench-store-'));
  const results = new Map<Mode, Samples>(MODES.map((m) => [m, { acquire: [], run: [] }]));
  try {
    await symlink(join(o.dataDir, 'images'), join(data, 'images'));
    const pg = await startPostgres();
    try {
      const url: Record<Mode, string> = { off: 'off', 'embedded PGlite': '', 'PostgreSQL server': pg.url };
      const perRound = Math.ceil(o.samples / o.rounds);
      for (let round = 0; round < o.rounds; round++) {
        for (const mode of MODES) await measure({ KILN_DATA_DIR: data, KILN_DATABASE_URL: url[mode], KILN_POOL: 'python=8', KILN_MAX_SANDBOXES: '64' }, perRound, results.get(mode)!);
      }
    } finally {
      await pg.stop();
    }
  } finally {
    await rm(data, { recursive: true, force: true });
  }
  return rowsOf(results);
}

/** One service: pool-hit creates (each deleted), then pooled one-shot runs, the pool refilled before each. */
async function measure(env: Record<string, string>, n: number, into: Samples): Promise<void> {
  const srv = await startServerProcess(env);
  try {
    const kiln = srv.client;
    for (let i = 0; i < n + 2; i++) {
      await waitPoolFull(kiln, 8);
      const t0 = performance.now();
      const sb = await kiln.sandboxes.create({ pack: 'python' });
      const ms = performance.now() - t0;
      if (!sb.fromPool) throw new Error('expected a pool hit');
      await kiln.sandboxes.delete(sb.id);
      if (i >= 2) into.acquire.push(ms);
    }
    for (let i = 0; i < n + 2; i++) {
      await waitPoolFull(kiln, 8);
      const t0 = performance.now();
      const r = await kiln.run({ pack: 'python', code: 'print(1)' });
      const ms = performance.now() - t0;
      if (r.stdout !== '1\n') throw new Error(`bad output ${JSON.stringify(r)}`);
      if (i >= 2) into.run.push(ms);
    }
  } finally {
    await srv.close();
  }
}

function rowsOf(results: Map<Mode, Samples>): Row[] {
  const off = results.get('off')!;
  const offAcquire = percentile(off.acquire, 50);
  const offRun = percentile(off.run, 50);
  const rows: Row[] = [];
  for (const mode of MODES) {
    const r = results.get(mode)!;
    const acquire = percentile(r.acquire, 50);
    const run = percentile(r.run, 50);
    const on = mode !== 'off';
    rows.push({
      group: 'store',
      name: `pooled acquire (HTTP create, pool hit), store ${mode === 'off' ? 'off' : `on: ${mode}`}`,
      p50: acquire,
      p99: percentile(r.acquire, 99),
      vsBaseline: on ? `${ratio(acquire, offAcquire)} store off` : undefined,
      target: `p50 ≤ ${ACQUIRE_TARGET_MS} ms`,
      met: acquire <= ACQUIRE_TARGET_MS,
      note: `n=${r.acquire.length}`,
    });
    rows.push({
      group: 'store',
      name: `/v1/run python print(1), pooled, store ${mode === 'off' ? 'off' : `on: ${mode}`}`,
      p50: run,
      p99: percentile(r.run, 99),
      vsBaseline: on ? `${ratio(run, offRun)} store off` : undefined,
      target: on ? `p50 ≤ ${RUN_TARGET}× store off` : undefined,
      met: on ? run <= RUN_TARGET * offRun : undefined,
      note: `n=${r.run.length}${on ? '' : ', the baseline of the rows below'}`,
    });
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const o = { samples: Number(argValue('--samples') ?? 40), rounds: Number(argValue('--rounds') ?? 2), dataDir: process.env.KILN_DATA_DIR ?? '/var/lib/kiln' };
  benchStore(o).then(
    (rows) => {
      for (const r of rows)
        console.log(`${r.name.padEnd(70)} p50 ${r.p50!.toFixed(2)} ms  p99 ${r.p99!.toFixed(2)} ms  ${r.vsBaseline ?? ''}  ${r.target ? `${r.target}: ${r.met ? 'met' : 'MISSED'}` : ''}  ${r.note}`);
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
