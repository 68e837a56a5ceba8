/**
 * The compiled host: bin/kiln runs dist/ (scripts/build.sh), not the TypeScript sources. Every call
 * here sets KILN_REQUIRE_DIST=1, so a missing, stale or broken build fails instead of falling back
 * to the tsx loader.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { KilnClient } from '../../sdk/src/index.js';
import { REPO_ROOT } from '../../src/core/config.js';
import { freePort, untilHealthy } from '../parity/service-process.js';

const run = promisify(execFile);
const KILN = join(REPO_ROOT, 'bin/kiln');
const env = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({ ...process.env, KILN_REQUIRE_DIST: '1', ...extra });

describe('compiled CLI (dist/)', { timeout: 300_000 }, () => {
  before(async () => {
    // What scripts/install.sh runs; a no-op when dist/ is current. A type error fails here.
    await run('bash', [join(REPO_ROOT, 'scripts/build.sh')], { timeout: 240_000 });
  });

  it('kiln --help runs from dist/ and lists every command', async () => {
    const r = await run(KILN, ['--help'], { env: env() });
    assert.equal(r.stderr, '');
    for (const c of ['serve', 'run', 'sandbox', 'images', 'packs', 'doctor', 'firecracker']) assert.match(r.stdout, new RegExp(`^  ${c} `, 'm'));
  });

  it('kiln --help says how to point the CLI at a server', async () => {
    const r = await run(KILN, ['--help'], { env: env() });
    assert.match(r.stdout, /\$KILN_URL/);
    assert.match(r.stdout, /KILN_PORT/);
    assert.match(r.stdout, /KILN_TOKEN/);
  });

  it('--help on every command prints its usage on stdout and exits 0 (kiln serve --help starts nothing)', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['run', '--help'], /^usage: kiln run <pack>/],
      [['run', 'python', '-h'], /^usage: kiln run <pack>/],
      [['help', 'run'], /^usage: kiln run <pack>/],
      [['sandbox', '--help'], /^usage: kiln sandbox create/],
      [['sandbox', 'exec', '--help'], /^usage: kiln sandbox create/],
      [['sandbox', 'rm', '--help'], /^usage: kiln sandbox create/],
      [['serve', '--help'], /^usage: kiln serve/],
      [['images', '--help'], /^usage:\n {2}kiln images build/],
      [['packs', '--help'], /^usage: kiln packs ls[\s\S]*KILN_ADMIN_TOKEN/],
      [['packs', 'create', '--help'], /^usage: kiln packs ls/],
      [['doctor', '--help'], /^usage: kiln doctor/],
      [['firecracker', 'install', '--help'], /^usage:\n {2}kiln firecracker install/],
    ];
    for (const [args, usage] of cases) {
      const r = await run(KILN, args, { env: env(), timeout: 30_000 });
      assert.match(r.stdout, usage, args.join(' '));
      assert.equal(r.stderr, '', args.join(' '));
    }
    for (const c of ['run', 'sandbox']) assert.match((await run(KILN, [c, '--help'], { env: env() })).stdout, /\$KILN_URL/, c);
  });

  it('a service it cannot reach is named by the URL really tried (KILN_PORT, KILN_URL)', async () => {
    const port = await freePort();
    const byPort = await run(KILN, ['run', 'shell', '-c', 'true'], { env: env({ KILN_URL: '', KILN_HOST: '', KILN_PORT: String(port) }) }).then(
      () => assert.fail('reached a service'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.equal(byPort.code, 1);
    assert.match(byPort.stderr, new RegExp(`cannot reach the kiln service at http://127\\.0\\.0\\.1:${port} \\(ECONNREFUSED\\)`));
    assert.doesNotMatch(byPort.stderr, /8400/);
    const byUrl = await run(KILN, ['sandbox', 'ls'], { env: env({ KILN_URL: `http://127.0.0.1:${port}/`, KILN_PORT: '8400' }) }).then(
      () => assert.fail('reached a service'),
      (e: { code: number; stderr: string }) => e,
    );
    assert.match(byUrl.stderr, new RegExp(`at http://127\\.0\\.0\\.1:${port} `));
  });

  it('kiln doctor --json runs from dist/ and finds the packs and backends', { skip: process.getuid?.() === 0 ? undefined : 'needs root' }, async () => {
    const r = await run(KILN, ['doctor', '--json'], { env: env(), timeout: 120_000 });
    type Check = { name: string; ok: boolean; detail: string };
    const report = JSON.parse(r.stdout) as { backends: { name: string; available: boolean; checks: Check[] }[]; images: Check[] };
    // Every registered backend reports its own checks; the namespace backend can run here.
    assert.deepEqual(
      report.backends.map((b) => b.name),
      ['namespace', 'qemu', 'firecracker'],
    );
    const ns = report.backends.find((b) => b.name === 'namespace')!;
    assert.equal(ns.available, true, JSON.stringify(ns.checks.filter((c) => !c.ok)));
    assert.ok(
      ns.checks.some((c) => c.name === 'cgroups' && c.ok),
      'doctor probes cgroups thoroughly',
    );
    // The packs are found through REPO_ROOT, which must point at the repo from dist/ as from src/.
    assert.ok(
      report.images.some((c) => c.name === 'image python'),
      `no pack found: ${report.images.map((c) => c.name).join(', ')}`,
    );
  });

  describe('kiln serve and kiln run from dist/', { skip: process.getuid?.() === 0 ? undefined : 'needs root' }, () => {
    let base = '';
    let svc: ChildProcess | undefined;
    let stderr = '';
    let url = '';

    before(async () => {
      base = await mkdtemp(join(tmpdir(), 'kiln-compiled-'));
      await chmod(base, 0o755); // sandbox uids traverse into the run dir
      const port = await freePort();
      url = `http://127.0.0.1:${port}`;
      // The embedded store in memory: its engine's thread starts from dist/ too (a .js worker), and
      // the shared data dir's database stays out of it.
      svc = spawn(KILN, ['serve'], {
        env: env({ KILN_RUN_DIR: join(base, 'run'), KILN_PORT: String(port), KILN_POOL: '', KILN_TOKEN: '', KILN_DATABASE_URL: 'memory://' }),
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      svc.stderr!.on('data', (d) => {
        stderr += d;
      });
      await untilHealthy(new KilnClient({ baseUrl: url }), { child: svc, stderr: () => stderr });
    });

    after(async () => {
      if (svc && svc.exitCode === null && svc.signalCode === null) {
        const exited = new Promise((r) => svc!.once('exit', r));
        svc.kill('SIGTERM');
        if ((await Promise.race([exited.then(() => true), sleep(30_000).then(() => false)])) === false) {
          svc.kill('SIGKILL');
          await exited;
        }
      }
      await rm(base, { recursive: true, force: true });
    });

    it('runs a snippet and passes the exit code through', async () => {
      const ok = await run(KILN, ['run', 'python', '-c', 'print(6*7)'], { env: env({ KILN_URL: url }), timeout: 120_000 });
      assert.equal(ok.stdout, '42\n');
      assert.equal(ok.stderr, '');
      await assert.rejects(
        run(KILN, ['run', 'shell', '-c', 'echo oops >&2; exit 4'], { env: env({ KILN_URL: url }), timeout: 120_000 }),
        (e: { code: number; stderr: string }) => e.code === 4 && /oops/.test(e.stderr),
      );
    });
  });
});
