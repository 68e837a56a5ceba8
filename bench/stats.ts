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
  note?: string;
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
export function runCmd(cmd: string, args: string[], opts: { uid?: number; gid?: number } = {}): Promise<string> {
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

export function renderTable(rows: Row[]): string {
  const head = ['group', 'measurement', 'p50', 'p99', 'value', 'vs baseline', 'target', 'note'];
  const body = rows.map((r) => [
    r.group, r.name,
    r.p50 === undefined ? '' : `${f(r.p50)} ms`,
    r.p99 === undefined ? '' : `${f(r.p99)} ms`,
    r.value === undefined ? '' : `${f(r.value)} ${r.unit ?? ''}`.trim(),
    r.vsBaseline ?? '', r.target ?? '', r.note ?? '',
  ]);
  return [head, head.map(() => '---'), ...body].map((cols) => `| ${cols.join(' | ')} |`).join('\n');
}

export function ratio(a: number, b: number): string {
  return `${(a / b).toFixed(2)}×`;
}

/** The value after `flag` on the command line (bench scripts' options). */
export function argValue(flag: string): string | undefined {
  const i = process.argv.indexOf(flag);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
