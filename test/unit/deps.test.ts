/**
 * .dependency-cruiser.cjs, the layer rules scripts/test.sh checks: the real tree passes, and a
 * throw-away tree that breaks each rule once fails with that rule's name on the offending import,
 * while the imports the rules allow (the registry of backends, the SDK's Node built-ins, the web app's
 * SDK imports) stay clean.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../src/core/config.js';

const execFileAsync = promisify(execFile);
const DEPCRUISE = join(REPO_ROOT, 'node_modules/.bin/depcruise');

interface Violation {
  rule: { name: string; severity: string };
  from: string;
  to: string;
}

async function depcruise(cwd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return execFileAsync(DEPCRUISE, ['--config', '.dependency-cruiser.cjs', ...args], { cwd, maxBuffer: 64 << 20, timeout: 120_000 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

/** One import per file; each line breaks (or, marked ok, keeps) one rule. */
const TREE: Record<string, string> = {
  'src/core/a.ts': "import { b } from './b.js';\nexport const a = (): number => b + 1;\n",
  'src/core/b.ts': "import type { a } from './a.js';\nexport const b = 1;\nexport type A = typeof a;\n",
  'src/core/uses-server.ts': "import { app } from '../server/app.js';\nexport default app;\n",
  'src/core/typo.ts': "import { gone } from './no-such-file.js';\nexport default gone;\n",
  'src/cli/doctor.ts': "import { probe } from '../backends/qemu/index.js';\nexport default probe;\n",
  'src/server/app.ts': 'export const app = 1;\n',
  'src/server/backends.ts': "import { probe } from '../backends/qemu/index.js';\nexport default probe;\n", // ok
  'src/backends/qemu/index.ts': "import { fc } from '../firecracker/index.js';\nimport { own } from './own.js';\nexport const probe = fc + own;\n",
  'src/backends/qemu/own.ts': 'export const own = 1;\n', // ok: a backend's own module
  'src/backends/firecracker/index.ts': 'export const fc = 1;\n',
  'sdk/src/index.ts': "import { readFile } from 'node:fs/promises';\nimport { a } from '../../src/core/a.js';\nimport { own } from './own.js';\nexport { readFile, a, own };\n", // node: ok, its own: ok, core: not
  'sdk/src/own.ts': 'export const own = 1;\n',
  'src/protocol/frames.ts': "import { app } from '../server/app.js';\nexport default app;\n",
  'web/src/main.tsx': "import { readFile } from '../../sdk/src/index.ts';\nimport { app } from '../../src/server/app.ts';\nexport default [readFile, app];\n",
};

describe('dependency rules (.dependency-cruiser.cjs)', { timeout: 300_000 }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-deps-'));
    await copyFile(join(REPO_ROOT, '.dependency-cruiser.cjs'), join(dir, '.dependency-cruiser.cjs'));
    await writeFile(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', allowImportingTsExtensions: true, noEmit: true, jsx: 'react-jsx' } }),
    );
    for (const [p, text] of Object.entries(TREE)) {
      await mkdir(dirname(join(dir, p)), { recursive: true });
      await writeFile(join(dir, p), text);
    }
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the repository itself breaks no rule', async () => {
    const r = await depcruise(REPO_ROOT, ['src', 'web/src', 'sdk/src']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /no dependency violations found/);
  });

  it('a tree breaking each rule once fails, naming each rule at its import and nothing else', async () => {
    const text = await depcruise(dir, ['src', 'web/src', 'sdk/src']);
    assert.notEqual(text.code, 0);
    assert.match(text.stdout, /error backends-only-from-registry: src\/cli\/doctor\.ts → src\/backends\/qemu\/index\.ts/);
    assert.match(text.stdout, /error backends-not-each-other: src\/backends\/qemu\/index\.ts → src\/backends\/firecracker\/index\.ts/);

    const json = await depcruise(dir, ['--output-type', 'json', 'src', 'web/src', 'sdk/src']);
    const { summary } = JSON.parse(json.stdout) as { summary: { violations: Violation[] } };
    const found = summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}${v.rule.severity === 'error' ? '' : ` (${v.rule.severity})`}`).sort();
    assert.deepEqual(found, [
      'backends-not-each-other: src/backends/qemu/index.ts -> src/backends/firecracker/index.ts',
      'backends-only-from-registry: src/cli/doctor.ts -> src/backends/qemu/index.ts',
      'core-below-server-and-cli: src/core/uses-server.ts -> src/server/app.ts',
      'no-cycles: src/core/a.ts -> src/core/b.ts', // a type-only import closes it: still a cycle
      'not-to-unresolvable: src/core/typo.ts -> ./no-such-file.js',
      'protocol-below-server-and-backends: src/protocol/frames.ts -> src/server/app.ts',
      'sdk-is-standalone: sdk/src/index.ts -> src/core/a.ts',
      'web-only-sdk: web/src/main.tsx -> src/server/app.ts',
    ]);
  });
});
