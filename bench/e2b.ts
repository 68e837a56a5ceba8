/**
 * The unmodified `e2b` client against kiln beside kiln's own SDK, same service, same run:
 * Sandbox.create('base') + commands.run('echo hi') + kill() against sandboxes.create + exec +
 * delete, alternating. Run alone: node --import tsx bench/e2b.ts [--samples N]
 */
import { pathToFileURL } from 'node:url';
import { Sandbox } from 'e2b';
import { startTestServer } from '../test/parity/fixture.js';
import { argValue, percentile, type Row, ratio, renderTable } from './stats.js';

const TOKEN = 'bench-e2b-admin';

export async function benchE2b(o: { samples: number }): Promise<Row[]> {
  const t = await startTestServer({ KILN_TOKEN: TOKEN });
  const url = t.server.url;
  const { KilnClient } = await import('../sdk/src/index.js');
  const kiln = new KilnClient({ baseUrl: url, token: TOKEN });
  const e2b: number[] = [];
  const own: number[] = [];
  try {
    for (let i = 0; i < o.samples + 2; i++) {
      let t0 = performance.now();
      const s = await Sandbox.create('base', { apiKey: TOKEN, apiUrl: url, sandboxUrl: url });
      const r = await s.commands.run('echo hi');
      await s.kill();
      const e2bMs = performance.now() - t0;
      if (r.stdout !== 'hi\n') throw new Error(`e2b: echo said ${JSON.stringify(r.stdout)}`);
      t0 = performance.now();
      const sb = await kiln.sandboxes.create({ pack: 'base' });
      const x = await kiln.sandboxes.exec(sb.id, { cmd: 'echo hi' });
      await kiln.sandboxes.delete(sb.id);
      const ownMs = performance.now() - t0;
      if (x.stdout !== 'hi\n') throw new Error(`kiln: echo said ${JSON.stringify(x.stdout)}`);
      if (i < 2) continue; // warm-up
      e2b.push(e2bMs);
      own.push(ownMs);
    }
  } finally {
    await t.close();
  }
  const ownP50 = percentile(own, 50);
  return [
    { group: 'e2b', name: "baseline: kiln's SDK, create + exec `echo hi` + delete (base pack, unpooled)", p50: ownP50, p99: percentile(own, 99), note: `n=${own.length}` },
    {
      group: 'e2b',
      name: "E2B's own client (e2b 2.51.0): Sandbox.create('base') + commands.run('echo hi') + kill()",
      p50: percentile(e2b, 50),
      p99: percentile(e2b, 99),
      vsBaseline: `${ratio(percentile(e2b, 50), ownP50)} kiln SDK`,
      note: `n=${e2b.length}, alternating with the baseline; Connect RPC over HTTP/1.1`,
    },
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  benchE2b({ samples: Number(argValue('--samples') ?? 10) }).then(
    (rows) =>
      console.log(
        renderTable(
          rows.map((r) => ({ ...r, runs: [r.p50 ?? 0], metRuns: 0 })),
          1,
        ),
      ),
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
