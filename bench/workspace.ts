/**
 * Workspace review over a 10,000-file project with 1,000 changed paths in the upper layer (600
 * modified, 200 added, 100 deleted by whiteouts, 100 copied up unchanged, plus a deleted
 * directory of 100 files): the change list (issue #18's target: under 1 s), the patch of all of
 * it, the upper scan alone and one approve of everything. Plain directories under /tmp; root.
 * Run alone: node --import tsx bench/workspace.ts [--samples N]
 */
import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { approve } from '../src/workspace/apply.js';
import { computeChanges } from '../src/workspace/changes.js';
import { unifiedDiff } from '../src/workspace/diff.js';
import { HostUpperSource, scanUpperTs } from '../src/workspace/scan.js';
import { initWorkspaceState } from '../src/workspace/state.js';
import { argValue, mergeRuns, percentile, type Row, renderTable, timeN } from './stats.js';

export const CHANGES_TARGET_MS = 1000;
const samples = Number(argValue('--samples') ?? 9);

const text = (i: number, salt: string): string => `${Array.from({ length: 40 }, (_, l) => `file ${i} line ${l} ${l === 20 ? salt : ''}`).join('\n')}\n`;

async function build(root: string): Promise<{ lower: string; upper: string }> {
  const lower = join(root, 'lower');
  const upper = join(root, 'upper');
  for (let d = 0; d < 100; d++) {
    await mkdir(join(lower, `d${d}`), { recursive: true });
    await mkdir(join(upper, `d${d}`), { recursive: true });
    for (let i = 0; i < 100; i++) await writeFile(join(lower, `d${d}`, `f${i}.txt`), text(d * 100 + i, ''));
  }
  let n = 0;
  for (let d = 0; d < 99; d++) {
    for (let i = 0; i < 10; i++, n++) {
      const name = join(upper, `d${d}`, `f${i}.txt`);
      if (n < 600) await writeFile(name, text(d * 100 + i, 'changed'));
      else if (n < 700)
        await writeFile(name, text(d * 100 + i, '')); // copied up, equal
      else if (n < 800) execFileSync('mknod', [name, 'c', '0', '0']);
      else await writeFile(join(upper, `d${d}`, `new${i}.txt`), text(n, 'new'));
    }
  }
  execFileSync('rm', ['-rf', join(upper, 'd99')]);
  execFileSync('mknod', [join(upper, 'd99'), 'c', '0', '0']);
  return { lower, upper };
}

const root = await mkdtemp(join(tmpdir(), 'kiln-ws-bench-'));
try {
  const { lower, upper } = await build(root);
  const src = new HostUpperSource(upper);
  const changes = await computeChanges(lower, src);
  const rows: Row[] = [];
  const add = (name: string, xs: number[], target?: number, note?: string): void => {
    const p50 = percentile(xs, 50);
    rows.push({ group: 'workspace', name, p50, p99: percentile(xs, 99), ...(target ? { target: `< ${target} ms`, met: p50 < target } : {}), note });
  };
  add('scan upper (interim TypeScript scan)', await timeN(samples, () => scanUpperTs(upper, undefined)), undefined, `${(await scanUpperTs(upper, undefined)).length} entries`);
  add('change list, 1,000 changed files', await timeN(samples, () => computeChanges(lower, src)), CHANGES_TARGET_MS, `${changes.length} changes over 10,000 files`);
  const patch = await unifiedDiff(lower, src, changes);
  add('unified diff of all changes', await timeN(samples, () => unifiedDiff(lower, src, changes)), undefined, `${(patch.length / 1024).toFixed(0)} KiB patch`);
  const approveMs: number[] = [];
  for (let i = 0; i < 3; i++) {
    const host = join(root, `host${i}`);
    const state = join(root, `state${i}`);
    await cp(lower, host, { recursive: true });
    await mkdir(state);
    await initWorkspaceState(state);
    const t0 = performance.now();
    const r = await approve({ hostDir: host, upperDir: upper, upper: src, workspaceDir: state });
    approveMs.push(performance.now() - t0);
    if (r.applied.length !== changes.length) throw new Error(`approve applied ${r.applied.length} of ${changes.length}`);
  }
  add('approve all (fsync per file)', approveMs, undefined, '3 runs');
  console.log(renderTable(mergeRuns([rows]), 1));
} finally {
  await rm(root, { recursive: true, force: true });
}
