/**
 * `npm run bench`: runs every benchmark available on this machine `--runs N` times (default 3),
 * prints one table (each kiln number beside a baseline measured in the same run; each row the
 * median run, every run's value beside it, each target marked met or missed), writes it to
 * docs/benchmarks.md and quotes it in README.md between the bench markers.
 * Flags: --quick (1 run, fewer samples, 10 s throughput; prints only, unless --write), --runs N,
 * --no-qemu, --write.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from '../src/core/config.js';
import { benchCliStartup } from './cli.js';
import { baselineInterpreter, benchBaselines, benchPooled, benchService, mountPythonImage } from './namespace.js';
import { argValue, mergeRuns, type ReportRow, type Row, renderTable, runCmd, targetSummary } from './stats.js';
import { benchStore } from './store.js';
import { benchWorkloads } from './workloads.js';

interface Options {
  quick: boolean;
  runs: number;
  qemu: boolean;
  write: boolean;
}

function options(): Options {
  const quick = process.argv.includes('--quick');
  const runs = Number(argValue('--runs') ?? (quick ? 1 : 3));
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a whole number of runs, e.g. --runs 3');
  return { quick, runs, qemu: !process.argv.includes('--no-qemu'), write: !quick || process.argv.includes('--write') };
}

/** One whole run of the suite. */
async function runOnce(o: Options): Promise<Row[]> {
  const b = { samples: o.quick ? 15 : 40, throughputSec: o.quick ? 10 : 30, dataDir: process.env.KILN_DATA_DIR ?? '/var/lib/kiln' };
  const rows: Row[] = [];
  let bareMs: number | undefined;
  console.error('bench: CLI start-up (node -e 0; kiln --help compiled and through tsx)…');
  rows.push(...(await benchCliStartup(o.quick ? 5 : 10)).rows);
  const img = await mountPythonImage(b.dataDir);
  try {
    console.error('bench: baselines (bare python, plain bwrap)…');
    const base = await benchBaselines(b, img.dir);
    bareMs = base.bare;
    rows.push(...base.rows);
    console.error('bench: namespace backend, unpooled…');
    rows.push(...(await benchService(b, base)));
    console.error('bench: warm pool, one-shot runs, throughput, cold CLIs (sandbox-runtime and kiln)…');
    rows.push(...(await benchPooled(b, base)));
  } finally {
    await img.close();
  }
  console.error('bench: the store on the hot path (off, embedded PGlite, a PostgreSQL server)…');
  try {
    rows.push(...(await benchStore({ samples: o.quick ? 10 : 30, rounds: o.quick ? 1 : 2, dataDir: b.dataDir })));
  } catch (e) {
    rows.push({ group: 'store', name: 'store on the hot path', note: `not measured: ${(e as Error).message.split('\n')[0]}` });
  }
  console.error('bench: real workloads, one-CPU sandbox against the host on one CPU…');
  rows.push(...(await benchWorkloads({ samples: o.quick ? 3 : 5, dataDir: b.dataDir })));
  console.error("bench: the E2B client beside kiln's SDK…");
  try {
    const { benchE2b } = await import('./e2b.js');
    rows.push(...(await benchE2b({ samples: o.quick ? 5 : 10 })));
  } catch (e) {
    rows.push({ group: 'e2b', name: 'E2B client', note: `not measured: ${(e as Error).message.split('\n')[0]}` });
  }
  console.error('bench: sandbox networking (create cost, throughput against a test internet)…');
  try {
    const { benchNetwork } = await import('./network.js');
    rows.push(...(await benchNetwork({ samples: o.quick ? 8 : 20 })));
  } catch (e) {
    rows.push({ group: 'network', name: 'sandbox networking', note: `not measured: ${(e as Error).message.split('\n')[0]}` });
  }
  console.error('bench: workspace sandboxes (10,000-file project, 1,000 changes)…');
  try {
    const { benchWorkspaces } = await import('./workspace-api.js');
    rows.push(...(await benchWorkspaces({ samples: o.quick ? 5 : 10 })));
  } catch (e) {
    rows.push({ group: 'workspace', name: 'workspace sandboxes', note: `not measured: ${(e as Error).message.split('\n')[0]}` });
  }
  if (o.qemu && existsSync(join(REPO_ROOT, 'bench/qemu.ts'))) {
    console.error('bench: qemu backend…');
    try {
      const mod = await import('./qemu.js');
      rows.push(...(await mod.benchQemu({ samples: o.quick ? 5 : 10, dataDir: b.dataDir })));
      rows.push(...(await mod.benchQemuRuns({ samples: o.quick ? 4 : 8, dataDir: b.dataDir, bareMs })));
    } catch (e) {
      rows.push({ group: 'qemu', name: 'qemu backend', note: `not measured: ${(e as Error).message.split('\n')[0]}` });
    }
  }
  return rows;
}

async function main(): Promise<number> {
  const o = options();
  // bin/kiln (the cold CLI rows, the service) must run the compiled host, not fall back to tsx.
  await runCmd('bash', [join(REPO_ROOT, 'scripts/build.sh')]);
  const interpreter = await baselineInterpreter();
  console.error(`bench: bare-host baseline interpreter: ${interpreter}`);
  const t0 = performance.now();
  const runs: Row[][] = [];
  for (let i = 1; i <= o.runs; i++) {
    console.error(`bench: run ${i} of ${o.runs}`);
    runs.push(await runOnce(o));
  }
  const minutes = (performance.now() - t0) / 60_000;
  const rows = mergeRuns(runs);
  const table = renderTable(rows, o.runs);
  const command = `npm run bench --${o.quick ? ' --quick' : ''} --runs ${o.runs}${o.qemu ? '' : ' --no-qemu'}`;
  const generated = new Date().toISOString();
  const machine = `${os.cpus()[0]?.model ?? 'cpu'} × ${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, Node ${process.version}`;
  const report = [
    '# kiln benchmarks',
    '',
    `Generated by \`${command}\` on ${generated}: ${o.runs} whole run${o.runs > 1 ? 's' : ''} of the suite, ${minutes.toFixed(1)} min.`,
    `Each row is the median run for that row (for an even count, the higher middle one; never the best),`,
    `with every run's p50 (or value) beside it; a target is met or missed by that median run. ${targetSummary(rows)}`,
    '',
    `Machine: ${machine}.`,
    '',
    `Bare-host baseline interpreter: ${interpreter}.`,
    '',
    'Every kiln number stands beside a baseline measured in the same run. Latencies are client-side',
    '(HTTP over loopback included) unless the note says otherwise. Rows marked "cold" time a whole',
    'command line, CLI start-up included, and are compared only with each other. These shared 2-core',
    'machines vary from run to run (the bare and plain-bwrap baselines themselves move by ±30% within',
    'a day and by up to 2.5× between days), so read each row against the baselines of the same run.',
    'Under TCG the guest blocks translated are the machine-independent part.',
    '',
    table,
    '',
  ].join('\n');
  console.log(report);
  if (!o.write) {
    console.error('bench: --quick prints only; pass --write to replace docs/benchmarks.md and the README quote');
    return 0;
  }
  await writeFile(join(REPO_ROOT, 'docs/benchmarks.md'), report + (await keptSection(join(REPO_ROOT, 'docs/benchmarks.md'))));
  await quoteInReadme(join(REPO_ROOT, 'README.md'), rows, { generated, runs: o.runs, command });
  console.error('bench: wrote docs/benchmarks.md and its quote in README.md');
  return 0;
}

const PROFILE_BEGIN = '<!-- profile:begin -->';
const PROFILE_END = '<!-- profile:end -->';

/**
 * The service's CPU profile (bench/tput.ts --profile, summarised by hand) is not regenerated with
 * the table: what stands between the profile markers is carried over to the new report.
 */
async function keptSection(path: string): Promise<string> {
  const old = await readFile(path, 'utf8').catch(() => '');
  const begin = old.indexOf(PROFILE_BEGIN);
  const end = old.indexOf(PROFILE_END);
  return begin < 0 || end < begin ? '' : `\n${old.slice(begin, end + PROFILE_END.length)}\n`;
}

const BEGIN = '<!-- bench:begin -->';
const END = '<!-- bench:end -->';

/**
 * README.md quotes the report between the bench markers: the baselines, every row with a target
 * (met or missed) and the cold CLI rows, copied from the report, never chosen by their numbers.
 */
export async function quoteInReadme(path: string, rows: ReportRow[], r: { generated: string; runs: number; command: string }): Promise<void> {
  const readme = await readFile(path, 'utf8');
  const begin = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (begin < 0 || end < begin) throw new Error(`README.md has no ${BEGIN} … ${END} block to write the numbers into`);
  const quoted = rows.filter((x) => x.group === 'baseline' || x.group === 'cold CLI' || x.target);
  const block = [
    BEGIN,
    `Quoted from the last report, [docs/benchmarks.md](docs/benchmarks.md) (\`${r.command}\`, ${r.generated.slice(0, 10)}, ${r.runs} run${r.runs > 1 ? 's' : ''}, median run): the baselines, every row with a target and the cold CLI rows. ${targetSummary(rows)}`,
    '',
    renderTable(quoted, r.runs),
    END,
  ].join('\n');
  await writeFile(path, readme.slice(0, begin) + block + readme.slice(end + END.length));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().then(
    (c) => {
      process.exitCode = c;
    },
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
