/**
 * Exec runs (docs/fork-runs.md): one-shot runs that a runner makes without a sandbox start but not
 * in its warm interpreter, against the same runs with fork runs off (a pooled sandbox per run),
 * in turns in one process: `node --import tsx bench/exec-runs.ts [--seconds 15] [--runs 3]`
 * (as root). Cases: a node snippet (node's runners are exec-only) and a python snippet with an
 * `env` of its own (not the zygote's kind of run). For each: 8 clients for `seconds` (runs/s,
 * errors, CPU ms per run of this process, which holds the service and the clients), and a serial
 * p50 (one run at a time, 150 ms apart). Prints the median run of each row and every run's value.
 */
import { pathToFileURL } from 'node:url';
import { startTestServer } from '../test/parity/fixture.js';
import { argValue, percentile } from './stats.js';

interface Case {
  name: string;
  pack: string;
  code: string;
  env?: Record<string, string>;
}

const CASES: Case[] = [
  { name: 'node snippet', pack: 'node', code: 'console.log(1)' },
  { name: 'python snippet with its own env', pack: 'python', code: 'print(1)', env: { X: '1' } },
];

interface Measured {
  runsPerSec: number;
  errors: number;
  forked: number;
  cpuMsPerRun: number;
  serialP50: number;
}

async function measure(c: Case, forkRuns: boolean, seconds: number): Promise<Measured> {
  const t = await startTestServer({ KILN_POOL: `${c.pack}=8`, KILN_FORK_RUNS: forkRuns ? '1' : '0' });
  try {
    const run = () => t.client.run({ pack: c.pack, code: c.code, env: c.env });
    // Warm: the pool filled (fork runs off) or the runners started (on).
    await new Promise((r) => setTimeout(r, 8000));
    let n = 0;
    let errors = 0;
    let forked = 0;
    const cpu0 = process.cpuUsage();
    const end = Date.now() + seconds * 1000;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (Date.now() < end) {
          try {
            const r = await run();
            if (r.stdout === '1\n' && r.exitCode === 0) n++;
            else errors++;
            if ((r as { forked?: boolean }).forked) forked++;
          } catch {
            errors++;
          }
        }
      }),
    );
    const cpu = process.cpuUsage(cpu0);
    await new Promise((r) => setTimeout(r, 3000));
    const serial: number[] = [];
    for (let i = 0; i < 15; i++) {
      const t0 = performance.now();
      await run();
      serial.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 150));
    }
    return { runsPerSec: n / seconds, errors, forked, cpuMsPerRun: (cpu.user + cpu.system) / 1000 / Math.max(1, n), serialP50: percentile(serial, 50) };
  } finally {
    await t.close();
  }
}

async function main(): Promise<void> {
  const seconds = Number(argValue('--seconds') ?? 15);
  const runs = Number(argValue('--runs') ?? 3);
  const med = (xs: number[]) => percentile(xs, 50);
  console.log(`exec runs: ${runs} runs, ${seconds} s each, 8 clients, fork runs off and on in turns\n`);
  console.log('| case | fork runs | runs/s (median) | vs off | errors | forked | CPU ms/run, service + clients | serial p50 ms | every run (runs/s) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const c of CASES) {
    const off: Measured[] = [];
    const on: Measured[] = [];
    for (let i = 0; i < runs; i++) {
      off.push(await measure(c, false, seconds));
      on.push(await measure(c, true, seconds));
    }
    const offRate = med(off.map((m) => m.runsPerSec));
    for (const [label, ms] of [
      ['off (baseline)', off],
      ['on', on],
    ] as const) {
      const rate = med(ms.map((m) => m.runsPerSec));
      const cells = [
        c.name,
        label,
        rate.toFixed(1),
        `${(rate / offRate).toFixed(2)}×`,
        String(ms.reduce((s, m) => s + m.errors, 0)),
        String(ms.reduce((s, m) => s + m.forked, 0)),
        med(ms.map((m) => m.cpuMsPerRun)).toFixed(1),
        med(ms.map((m) => m.serialP50)).toFixed(1),
        ms.map((m) => m.runsPerSec.toFixed(1)).join(' / '),
      ];
      console.log(`| ${cells.join(' | ')} |`);
    }
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await main();
}
