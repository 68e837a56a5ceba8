/** Timing helpers and the result table every benchmark prints. */
import { spawn } from 'node:child_process';

export interface Row {
  group: string;
  name: string;
  /** Milliseconds unless `unit` says otherwise. */
  p50?: number;
  p99?: number;
  value?: number;
  unit?: string;
  baseline?: string;
  /** Ratio to the baseline's p50 (or the target), shown as text. */
  vsBaseline?: string;
  target?: string;
  /** Whether this run met `target`; set wherever a target is. */
  met?: boolean;
  note?: string;
}

/** One row of the report: the median run's row, with every run's value beside it. */
export interface ReportRow extends Row {
  /** p50 (or value) of each run, in run order. */
  runs: number[];
  /** Runs that met the target. */
  metRuns: number;
}

export function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

export async function timeN(n: number, fn: () => Promise<unknown>, warmup = 2): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    out.push(performance.now() - t0);
  }
  return out;
}

/** Runs a command to completion; rejects on a non-zero exit (a benchmark must not time failures). */
export function runCmd(cmd: string, args: string[], opts: { uid?: number; gid?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('error', reject);
    c.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err.slice(0, 500)}`))));
  });
}

const f = (x: number | undefined, digits = 2): string => (x === undefined || Number.isNaN(x) ? '' : x >= 100 ? x.toFixed(0) : x.toFixed(digits));

/** The value a row's median is taken over: its p50, or its single value. */
function primary(r: Row): number | undefined {
  return r.p50 ?? r.value;
}

/**
 * Merges several whole runs of the suite: each row is the run with the median value (for an even
 * count, the higher middle one), never the best; every run's value stays listed beside it.
 */
export function mergeRuns(runs: Row[][]): ReportRow[] {
  const keys: string[] = [];
  const byKey = new Map<string, Row[]>();
  for (const rows of runs) {
    for (const r of rows) {
      const k = `${r.group}\u0000${r.name}`;
      if (!byKey.has(k)) {
        keys.push(k);
        byKey.set(k, []);
      }
      byKey.get(k)!.push(r);
    }
  }
  return keys.map((k) => {
    const all = byKey.get(k)!;
    const measured = all.filter((r) => primary(r) !== undefined && !Number.isNaN(primary(r)));
    const sorted = [...measured].sort((a, b) => primary(a)! - primary(b)!);
    const median = sorted[Math.floor(sorted.length / 2)] ?? all[0]!;
    return { ...median, runs: measured.map((r) => primary(r)!), metRuns: all.filter((r) => r.met).length };
  });
}

export function renderTable(rows: ReportRow[], runCount: number): string {
  const all = runCount > 1;
  const head = ['group', 'measurement', 'p50', 'p99', 'value', 'vs baseline', 'target', 'met?', ...(all ? [`all ${runCount} runs (p50 or value)`] : []), 'note'];
  const body = rows.map((r) => [
    r.group,
    r.name,
    r.p50 === undefined ? '' : `${f(r.p50)} ms`,
    r.p99 === undefined ? '' : `${f(r.p99)} ms`,
    r.value === undefined ? '' : `${f(r.value)} ${r.unit ?? ''}`.trim(),
    r.vsBaseline ?? '',
    r.target ?? '',
    metText(r, runCount),
    ...(all ? [r.runs.map((x) => f(x)).join(' / ')] : []),
    r.note ?? '',
  ]);
  return [head, head.map(() => '---'), ...body].map((cols) => `| ${cols.join(' | ')} |`).join('\n');
}

function metText(r: ReportRow, runCount: number): string {
  if (!r.target) return '';
  const verdict = r.met ? 'met' : '**missed**';
  return runCount > 1 ? `${verdict} (met in ${r.metRuns} of ${runCount} runs)` : verdict;
}

/** Targets met and missed in a report, as a sentence. */
export function targetSummary(rows: ReportRow[]): string {
  const targeted = rows.filter((r) => r.target);
  const missed = targeted.filter((r) => !r.met);
  return `${targeted.length - missed.length} of ${targeted.length} targets met${missed.length ? `; missed: ${missed.map((r) => r.name).join('; ')}` : ''}.`;
}

export function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/** The value after `flag` on the command line (bench scripts' options). */
export function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
