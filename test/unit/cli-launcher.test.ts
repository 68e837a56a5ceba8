/**
 * bin/kiln, the launcher, in a throw-away copy of the repo layout: it runs dist/ when dist/ is at
 * least as new as every file in src/ and sdk/src/, and otherwise says how to fix it (falling back to the
 * sources through tsx, or failing under KILN_REQUIRE_DIST=1 or without tsx).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../src/core/config.js';

const execFileAsync = promisify(execFile);

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

async function kiln(bin: string, args: string[], env: Record<string, string> = {}): Promise<Result> {
  const base: NodeJS.ProcessEnv = { ...process.env, ...env };
  if (!('KILN_REQUIRE_DIST' in env)) delete base.KILN_REQUIRE_DIST;
  return execFileAsync(bin, args, { env: base }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe('bin/kiln launcher', () => {
  let root = '';
  const at = (p: string): string => join(root, p);
  const put = async (p: string, text: string, ageSec = 0): Promise<void> => {
    await mkdir(dirname(at(p)), { recursive: true });
    await writeFile(at(p), text);
    const t = Date.now() / 1000 - ageSec;
    await utimes(at(p), t, t);
  };
  /** Everything in src/ and sdk/src/ (files and folders) an hour old, the stamp a minute old: a fresh build. */
  const freshBuild = async (): Promise<void> => {
    const hourAgo = Date.now() / 1000 - 3600;
    for (const p of ['src/cli/main.ts', 'src/cli', 'src', 'sdk/src/index.ts', 'sdk/src', 'tsconfig.json', 'tsconfig.build.json']) await utimes(at(p), hourAgo, hourAgo);
    await put('dist/.kiln-src-hash', 'hash\n', 60);
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'kiln-launcher-'));
    await mkdir(at('bin'));
    await copyFile(join(REPO_ROOT, 'bin/kiln'), at('bin/kiln'));
    await put('src/cli/main.ts', "console.log('sources', process.argv.slice(2).join(' '));\n");
    await put('sdk/src/index.ts', 'export {};\n');
    await put('tsconfig.json', '{}');
    await put('tsconfig.build.json', '{}');
    await put('dist/src/cli/main.js', "console.log('compiled', process.argv.slice(2).join(' '));\n");
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('runs dist/ when it is newer than every source, with the arguments passed through', async () => {
    await freshBuild();
    const r = await kiln(at('bin/kiln'), ['run', '-c', 'x y'], { KILN_REQUIRE_DIST: '1' });
    assert.deepEqual(r, { code: 0, stdout: 'compiled run -c x y\n', stderr: '' });
  });

  it('finds its repo through a symlink (npm link, /usr/local/bin/kiln)', async () => {
    await freshBuild();
    const link = join(root, 'linked-kiln');
    await symlink(at('bin/kiln'), link);
    const r = await kiln(link, ['--help'], { KILN_REQUIRE_DIST: '1' });
    assert.equal(r.stdout, 'compiled --help\n');
  });

  it('a source saved after the build (even deep in src/) makes dist/ stale: it says how to fix it', async () => {
    await freshBuild();
    await put('src/core/deep/new.ts', 'export {};\n');
    const r = await kiln(at('bin/kiln'), ['--help'], { KILN_REQUIRE_DIST: '1' });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /missing or older than src\/.*scripts\/build\.sh/);
    await rm(at('src/core'), { recursive: true });
  });

  it('an SDK source saved after the build makes dist/ stale too (the CLI runs the SDK compiled beside it)', async () => {
    await freshBuild();
    await put('sdk/src/client.ts', 'export {};\n');
    const r = await kiln(at('bin/kiln'), ['--help'], { KILN_REQUIRE_DIST: '1' });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /missing or older than src\/ or sdk\/src\/.*scripts\/build\.sh/);
    await rm(at('sdk/src/client.ts'));
  });

  it('without tsx installed a stale dist/ fails with the fix, not a module error', async () => {
    await freshBuild();
    await put('src/cli/main.ts', "console.log('sources', process.argv.slice(2).join(' '));\n");
    const r = await kiln(at('bin/kiln'), ['--help']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /scripts\/build\.sh/);
    assert.doesNotMatch(r.stderr, /ERR_MODULE_NOT_FOUND|Cannot find/);
  });

  it('with tsx installed a stale dist/ runs the sources and says so', async () => {
    await symlink(join(REPO_ROOT, 'node_modules'), at('node_modules'));
    try {
      await freshBuild();
      await put('tsconfig.build.json', '{}');
      const r = await kiln(at('bin/kiln'), ['a', 'b']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, 'sources a b\n');
      assert.match(r.stderr, /running the sources through tsx.*scripts\/build\.sh/);
    } finally {
      await rm(at('node_modules'));
    }
  });

  it('no dist/ at all: says how to build it', async () => {
    await rm(at('dist'), { recursive: true });
    const r = await kiln(at('bin/kiln'), ['--help'], { KILN_REQUIRE_DIST: '1' });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /scripts\/build\.sh/);
  });
});
