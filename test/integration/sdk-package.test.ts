/**
 * The SDK as a user gets it: `npm pack` of sdk/ (which builds it), `npm install` of the tarball into
 * an empty project with no registry, and sdk/README.md's example run there as a plain .mjs against
 * a real kiln service. The example and its expected output are read from the README, so the README
 * cannot drift from what the package does.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../src/core/config.js';
import { type ServiceProcess, startServiceProcess } from '../parity/service-process.js';

const run = promisify(execFile);
const SDK_DIR = join(REPO_ROOT, 'sdk');

/** The body of the first ```lang block after `after` in the markdown. */
function codeBlock(markdown: string, lang: string, after = ''): string {
  const from = markdown.indexOf(after);
  assert.ok(from >= 0, `no "${after}" in sdk/README.md`);
  const m = new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, 'm').exec(markdown.slice(from));
  assert.ok(m, `no \`\`\`${lang} block in sdk/README.md`);
  return m[1]!;
}

describe('the SDK package (npm pack, npm install, README example)', { timeout: 300_000 }, () => {
  let dir = '';
  let app = '';
  let tarball = '';
  let packed: { path: string }[] = [];
  const npmEnv = (): NodeJS.ProcessEnv => ({ ...process.env, npm_config_cache: join(dir, 'npm-cache'), npm_config_update_notifier: 'false' });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-sdk-package-'));
    app = join(dir, 'app');
    // prepack builds sdk/dist with the repo's TypeScript; the tarball lands outside the repo.
    const pack = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: SDK_DIR, env: npmEnv(), timeout: 120_000 });
    const [info] = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = join(dir, info!.filename);
    packed = info!.files;
    await mkdir(app);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'kiln-sdk-smoke', private: true, type: 'module' }));
    await run('npm', ['install', '--offline', '--no-audit', '--no-fund', tarball], { cwd: app, env: npmEnv(), timeout: 120_000 });
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the tarball holds the built SDK, its types and README, and no sources or server code', () => {
    const paths = packed.map((f) => f.path).sort();
    for (const p of ['README.md', 'package.json', 'dist/index.js', 'dist/index.d.ts', 'dist/client.js', 'dist/errors.js', 'dist/generated.js'])
      assert.ok(paths.includes(p), `${p} missing from the tarball: ${paths.join(', ')}`);
    assert.deepEqual(
      paths.filter((p) => !/^(dist\/[\w-]+\.(js|d\.ts)|README\.md|package\.json)$/.test(p)),
      [],
    );
  });

  it('installs into an empty project offline, with no dependencies of its own', async () => {
    const manifest = JSON.parse(await readFile(join(app, 'node_modules/@kiln/sdk/package.json'), 'utf8')) as { dependencies?: object };
    assert.equal(manifest.dependencies, undefined);
    const lock = JSON.parse(await readFile(join(app, 'package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
    assert.deepEqual(Object.keys(lock.packages).sort(), ['', 'node_modules/@kiln/sdk']);
  });

  it("the README example typechecks against the installed package's .d.ts", async () => {
    await writeFile(join(app, 'example.mjs'), codeBlock(await readFile(join(SDK_DIR, 'README.md'), 'utf8'), 'js'));
    const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
    const r = await run(
      process.execPath,
      [tsc, '--noEmit', '--allowJs', '--checkJs', '--strict', '--module', 'nodenext', '--target', 'es2022', '--typeRoots', join(REPO_ROOT, 'node_modules/@types'), '--types', 'node', 'example.mjs'],
      { cwd: app, timeout: 120_000 },
    ).catch((e: { stdout: string }) => e);
    assert.equal(r.stdout, '');
  });

  describe('against a running kiln', { skip: process.getuid?.() === 0 ? undefined : 'needs root' }, () => {
    let svc: ServiceProcess | undefined;
    before(async () => {
      svc = await startServiceProcess({ KILN_BACKEND: 'namespace' });
    });
    after(async () => {
      await svc?.close();
    });

    it('the README example runs as a plain .mjs and prints what the README says', async () => {
      const readme = await readFile(join(SDK_DIR, 'README.md'), 'utf8');
      await writeFile(join(app, 'example.mjs'), codeBlock(readme, 'js'));
      const r = await run(process.execPath, ['example.mjs'], { cwd: app, env: { ...process.env, KILN_URL: svc!.baseUrl, KILN_TOKEN: '' }, timeout: 120_000 });
      assert.equal(r.stdout, codeBlock(readme, 'text', 'It prints:'));
      assert.equal(r.stderr, '');
      assert.deepEqual(await svc!.client.sandboxes.list(), [], 'the example deletes its sandbox');
    });
  });
});
