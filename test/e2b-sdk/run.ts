/**
 * Runs E2B's own JS SDK integration tests (from the e2b-dev/E2B repository) against a real kiln:
 * the sandbox commands and files tests and the API info/kill/list tests, with the published
 * `e2b` package in place of the SDK's sources and a setup.ts of our own (E2B's creates sandboxes
 * of its "base" template the same way; ours adds nothing else).
 *
 *   bash /work/wt/cg-run.sh <name> node --import tsx test/e2b-sdk/run.ts [vitest filter…]
 *
 * The E2B repository is read with git (a bare mirror is fine): E2B_REPO, default
 * /work/.mirror/e2b-dev+E2B/repo. Without filters: the suites below. Exit status: vitest's.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../../src/core/config.js';
import { startTestServer } from '../parity/fixture.js';

const ADMIN = 'admin-token-for-e2b-sdk-tests';
const SUITES = ['tests/sandbox/commands/', 'tests/sandbox/files/', 'tests/api/info.test.ts', 'tests/api/kill.test.ts', 'tests/api/list.test.ts'];

const SETUP = `import { test as base } from 'vitest'
import { Sandbox } from 'e2b'
export const template = 'base'
export const isDebug = false
export const TEST_API_KEY = 'e2b_' + '0'.repeat(40)
const rand = () => Math.random().toString(36).slice(2, 10)
export const sandboxTest = base.extend({
  template,
  sandboxTestId: [async ({}, use) => { await use('test-' + rand()) }, { auto: true }],
  sandboxOpts: {},
  sandbox: [async ({ sandboxTestId, sandboxOpts }, use) => {
    const sandbox = await Sandbox.create(template, { metadata: { sandboxTestId }, ...sandboxOpts })
    try { await use(sandbox) } finally { await sandbox.kill().catch(() => undefined) }
  }, { auto: false }],
})
export async function wait(ms) { return new Promise((r) => setTimeout(r, ms)) }
export function apiUrl(path) { return process.env.E2B_API_URL + path }
`;

async function main(): Promise<number> {
  const repo = process.env.E2B_REPO ?? '/work/.mirror/e2b-dev+E2B/repo';
  const filters = process.argv.slice(2);
  const git = (...args: string[]): string => execFileSync('git', ['-C', repo, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const commit = git('rev-parse', 'HEAD').trim();
  const dir = await mkdtemp(join(REPO_ROOT, '.e2b-sdk-tests-')); // inside the repo: `e2b` and vitest resolve from its node_modules
  const ts = await startTestServer({ KILN_TOKEN: ADMIN, KILN_DATABASE_URL: 'memory://' });
  try {
    const files = git('ls-tree', '-r', '--name-only', commit, 'packages/js-sdk/tests/')
      .split('\n')
      .filter((f) => f.endsWith('.ts'));
    for (const f of files) {
      const rel = f.slice('packages/js-sdk/'.length);
      let text = rel === 'tests/setup.ts' ? SETUP : git('show', `${commit}:${f}`);
      text = text.replace(/from '(\.\.\/)+src(\/index|\/errors)?(\.js)?'/g, "from 'e2b'");
      await mkdir(dirname(join(dir, rel)), { recursive: true });
      await writeFile(join(dir, rel), text);
    }
    const r = await fetch(`${ts.server.url}/v1/keys`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' }, body: '{"name":"e2b-sdk-tests"}' });
    const { secret } = (await r.json()) as { secret: string };
    console.log(`E2B ${commit.slice(0, 9)} SDK tests against kiln at ${ts.server.url}`);
    return await new Promise<number>((resolve) => {
      const child = spawn(
        join(REPO_ROOT, 'node_modules/.bin/vitest'),
        ['run', '--root', dir, '--reporter', 'verbose', '--testTimeout', '60000', '--fileParallelism', 'false', ...(filters.length ? filters : SUITES)],
        {
          stdio: 'inherit',
          env: { ...process.env, E2B_API_URL: ts.server.url, E2B_SANDBOX_URL: ts.server.url, E2B_API_KEY: secret, E2B_DOMAIN: 'kiln.invalid' },
        },
      );
      child.on('exit', (code) => resolve(code ?? 1));
    });
  } finally {
    await ts.close();
    await rm(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
