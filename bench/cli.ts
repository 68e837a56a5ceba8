/**
 * CLI start-up: `kiln --help` (the compiled host in dist/) beside `node -e 0`, and beside the same
 * command run through the tsx loader as bin/kiln did before the host was compiled. The three are
 * sampled in turn (one of each per round), so a busy moment slows all three alike.
 * Run alone: node --import tsx bench/cli.ts [--samples N]
 */
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../src/core/config.js';
import { argValue, percentile, type Row, ratio, runCmd } from './stats.js';

/** `kiln --help` within this many times `node -e 0` (issue #13). */
export const CLI_START_TARGET = 3;

export interface CliStartup {
  rows: Row[];
  samples: { node: number[]; kiln: number[]; loader: number[] };
}

export async function benchCliStartup(samples: number): Promise<CliStartup> {
  const kiln = join(REPO_ROOT, 'bin/kiln');
  // A stale or missing dist/ would make bin/kiln fall back to the loader: refuse to time that.
  const env = { ...process.env, KILN_REQUIRE_DIST: '1' };
  const loader = ['--import', pathToFileURL(join(REPO_ROOT, 'node_modules/tsx/dist/loader.mjs')).href, join(REPO_ROOT, 'src/cli/main.ts'), '--help'];
  const cmds: Record<keyof CliStartup['samples'], () => Promise<unknown>> = {
    node: () => runCmd(process.execPath, ['-e', '0']),
    kiln: () => runCmd(kiln, ['--help'], { env }),
    loader: () => runCmd(process.execPath, loader),
  };
  const s: CliStartup['samples'] = { node: [], kiln: [], loader: [] };
  for (const fn of Object.values(cmds)) await fn(); // warm the page cache once
  for (let i = 0; i < samples; i++) {
    for (const [k, fn] of Object.entries(cmds) as [keyof CliStartup['samples'], () => Promise<unknown>][]) {
      const t0 = performance.now();
      await fn();
      s[k].push(performance.now() - t0);
    }
  }
  const p = (x: number[]): number => percentile(x, 50);
  const row = (name: string, x: number[], extra: Partial<Row> = {}): Row => ({ group: 'cold CLI', name, p50: p(x), p99: percentile(x, 99), note: `n=${samples}`, ...extra });
  return {
    samples: s,
    rows: [
      row('baseline: `node -e 0` (Node start-up alone)', s.node),
      row('kiln: `kiln --help` (compiled dist/)', s.kiln, {
        vsBaseline: `${ratio(p(s.kiln), p(s.node))} node -e 0`,
        target: `≤ ${CLI_START_TARGET}× node -e 0`,
        met: p(s.kiln) <= CLI_START_TARGET * p(s.node),
      }),
      row('kiln: `kiln --help` through the tsx loader (how bin/kiln ran before dist/)', s.loader, { vsBaseline: `${ratio(p(s.loader), p(s.node))} node -e 0` }),
    ],
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const n = Number(argValue('--samples') ?? 10);
  benchCliStartup(n).then(
    ({ rows, samples }) => {
      for (const r of rows)
        console.log(
          `${r.name}: p50 ${r.p50!.toFixed(1)} ms, p99 ${r.p99!.toFixed(1)} ms${r.vsBaseline ? ` (${r.vsBaseline})` : ''}${r.target ? `, target ${r.target}: ${r.met ? 'met' : 'missed'}` : ''}`,
        );
      console.log(JSON.stringify(Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, v.map((x) => Math.round(x))]))));
    },
    (e: Error) => {
      console.error(`bench/cli: ${e.message}`);
      process.exitCode = 1;
    },
  );
}
