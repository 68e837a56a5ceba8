/**
 * What the store costs on the hot path: the same pooled create, exec and delete loop against a
 * service with no store (KILN_DATABASE_URL=off), the embedded PGlite, and a PostgreSQL server (a
 * private cluster, test/store/postgres-server.ts), each its own process, in one run. Prints p50
 * and p99 per mode; not part of the report (npm run bench). Run as root:
 *   node --import tsx bench/store-cost.ts [--samples 150] [--rounds 2]
 * The embedded database lives under KILN_DATA_DIR (default /var/lib/kiln) in db/: it is removed
 * afterwards only if this run created it.
 */
import { access, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { startPostgres } from '../test/store/postgres-server.js';
import { startServerProcess, waitPoolFull } from './server.js';
import { argValue, percentile } from './stats.js';

const samples = Number(argValue('--samples') ?? 150);
const rounds = Number(argValue('--rounds') ?? 2);
const dataDir = process.env.KILN_DATA_DIR || '/var/lib/kiln';
const dbDir = join(dataDir, 'db');
const hadDb = await access(dbDir).then(
  () => true,
  () => false,
);

const pg = await startPostgres();
const results = new Map<string, { acquire: number[]; exec: number[]; run: number[] }>();
try {
  const modes: Array<[string, string | undefined]> = [
    ['off', 'off'],
    ['embedded PGlite', undefined],
    ['PostgreSQL server', pg.url],
  ];
  for (let round = 0; round < rounds; round++) {
    for (const [name, url] of modes) {
      const env: Record<string, string> = { KILN_POOL: 'shell=4' };
      if (url !== undefined) env.KILN_DATABASE_URL = url;
      else env.KILN_DATABASE_URL = '';
      const srv = await startServerProcess(env);
      const r = results.get(name) ?? { acquire: [], exec: [], run: [] };
      results.set(name, r);
      try {
        const kiln = srv.client;
        await waitPoolFull(kiln, 4);
        for (let i = 0; i < samples + 5; i++) {
          await waitPoolFull(kiln, 2);
          let t0 = performance.now();
          const sb = await kiln.sandboxes.create({ pack: 'shell' });
          const acquireMs = performance.now() - t0;
          if (!sb.fromPool) throw new Error('expected a pool hit');
          t0 = performance.now();
          const out = await kiln.sandboxes.exec(sb.id, { cmd: ['true'] });
          const execMs = performance.now() - t0;
          if (out.exitCode !== 0) throw new Error(`exec failed: ${JSON.stringify(out)}`);
          await kiln.sandboxes.delete(sb.id);
          await waitPoolFull(kiln, 2);
          t0 = performance.now();
          await kiln.run({ pack: 'shell', code: 'true' });
          const runMs = performance.now() - t0;
          if (i >= 5) {
            r.acquire.push(acquireMs);
            r.exec.push(execMs);
            r.run.push(runMs);
          }
        }
      } finally {
        await srv.close();
      }
    }
  }
} finally {
  await pg.stop();
  if (!hadDb) await rm(dbDir, { recursive: true, force: true });
}

const f = (xs: number[]): string => `p50 ${percentile(xs, 50).toFixed(2)} ms, p99 ${percentile(xs, 99).toFixed(2)} ms`;
console.log(`${samples} samples × ${rounds} rounds per mode (rounds interleaved), shell pack, namespace backend`);
for (const [name, r] of results) {
  console.log(`${name.padEnd(18)} pooled acquire ${f(r.acquire)} | exec true ${f(r.exec)} | /v1/run (pooled) ${f(r.run)}`);
}
