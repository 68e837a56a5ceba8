/**
 * Workspace sandboxes through the real service (namespace backend), each beside its baseline from
 * the same run: a create over a 10,000-file project against an ordinary unpooled create of the same
 * pack (alternating, deletes untimed), and the change list of 1,000 changed files (target: under 1 s).
 * Run alone: node --import tsx bench/workspace-api.ts [--samples N]
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { startTestServer } from '../test/parity/fixture.js';
import { argValue, percentile, type Row, ratio, renderTable, timeN } from './stats.js';

const run = promisify(execFile);

/** A project of `files` small files in folders of 100, owned by uid 1000. */
async function makeProject(dir: string, files: number): Promise<void> {
  for (let d = 0; d < files / 100; d++) {
    const sub = join(dir, `pkg${d}`);
    await mkdir(sub, { recursive: true });
    await Promise.all(Array.from({ length: 100 }, (_, i) => writeFile(join(sub, `f${i}.txt`), `file ${d}/${i}\n`)));
  }
  await run('chown', ['-R', '1000:1000', dir]);
}

export async function benchWorkspaces(o: { samples: number }): Promise<Row[]> {
  const base = await mkdtemp(join(tmpdir(), 'kiln-bench-ws-'));
  await chmod(base, 0o755);
  const root = join(base, 'projects');
  const project = join(root, 'big');
  await makeProject(project, 10_000);
  const t = await startTestServer({ KILN_WORKSPACE_ROOTS: root, KILN_WORKSPACES_DIR: join(base, 'workspaces') });
  const kiln = t.client;
  try {
    // Creates alternate (plain, workspace) so both see the same load; deletes are not timed.
    const plain: number[] = [];
    const ws: number[] = [];
    for (let i = 0; i < o.samples + 2; i++) {
      let t0 = performance.now();
      const a = await kiln.sandboxes.create({ pack: 'shell' });
      const plainMs = performance.now() - t0;
      await kiln.sandboxes.delete(a.id);
      t0 = performance.now();
      const b = await kiln.json<{ id: string }>('POST', '/v1/sandboxes', { pack: 'shell', workspace: { path: project } });
      const wsMs = performance.now() - t0;
      await kiln.request('DELETE', `/v1/sandboxes/${b.id}?discard=true`);
      if (i < 2) continue; // warm-up
      plain.push(plainMs);
      ws.push(wsMs);
    }
    // 1,000 changed files: every file of ten folders rewritten in the sandbox.
    const sb = await kiln.json<{ id: string }>('POST', '/v1/sandboxes', { pack: 'shell', workspace: { path: project } });
    const w = await kiln.sandboxes.exec(sb.id, { cmd: ['sh', '-c', 'for d in 0 1 2 3 4 5 6 7 8 9; do for f in pkg$d/*.txt; do echo changed >> $f; done; done'], timeoutMs: 120_000 });
    if (w.exitCode !== 0) throw new Error(`writing the changes failed: ${w.stderr}`);
    let count = 0;
    const list = await timeN(Math.max(3, Math.ceil(o.samples / 2)), async () => {
      const r = await kiln.json<{ changes: unknown[] }>('GET', `/v1/sandboxes/${sb.id}/changes`);
      count = r.changes.length;
    });
    await kiln.request('DELETE', `/v1/sandboxes/${sb.id}?discard=true`);
    if (count !== 1000) throw new Error(`expected 1000 changes, the service listed ${count}`);
    const plainP50 = percentile(plain, 50);
    const wsP50 = percentile(ws, 50);
    return [
      { group: 'workspace', name: 'baseline: create, unpooled (shell pack, HTTP, to agent ready)', p50: plainP50, p99: percentile(plain, 99), note: `n=${plain.length}` },
      {
        group: 'workspace',
        name: 'workspace create over a 10,000-file project (HTTP, to agent ready)',
        p50: wsP50,
        p99: percentile(ws, 99),
        vsBaseline: `${ratio(wsP50, plainP50)} create`,
        target: '≤ 2× create',
        met: wsP50 <= 2 * plainP50,
        note: `n=${ws.length}, alternating with the baseline; upper image, loop device, idmapped bind, overlay`,
      },
      {
        group: 'workspace',
        name: 'change list of 1,000 changed files (HTTP)',
        p50: percentile(list, 50),
        p99: percentile(list, 99),
        target: '< 1 s',
        met: percentile(list, 50) < 1000,
        note: `n=${list.length}; scan of the upper layer + comparison with the project`,
      },
    ];
  } finally {
    await t.close();
    await rm(base, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const samples = Number(argValue('--samples') ?? 10);
  benchWorkspaces({ samples }).then(
    (rows) =>
      console.log(
        renderTable(
          rows.map((r) => ({ ...r, runs: [r.p50 ?? r.value ?? 0], metRuns: r.met ? 1 : 0 })),
          1,
        ),
      ),
    (e) => {
      console.error(e);
      process.exitCode = 1;
    },
  );
}
