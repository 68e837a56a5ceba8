/**
 * biome.json, the linter and formatter scripts/test.sh runs (`biome ci`): the repository passes,
 * and a throw-away tree with one lint violation and one unformatted file fails, naming both.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../../src/core/config.js';

const execFileAsync = promisify(execFile);
const BIOME = join(REPO_ROOT, 'node_modules/.bin/biome');

async function biome(cwd: string, args: string[]): Promise<{ code: number; out: string }> {
  return execFileAsync(BIOME, args, { cwd, maxBuffer: 64 << 20, timeout: 120_000 }).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
  );
}

describe('lint and format (biome.json)', { timeout: 300_000 }, () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-lint-'));
    await copyFile(join(REPO_ROOT, 'biome.json'), join(dir, 'biome.json'));
    await mkdir(join(dir, 'src/core'), { recursive: true });
    // Formatted, but compares with == (lint/suspicious/noDoubleEquals).
    await writeFile(join(dir, 'src/core/loose.ts'), 'export const same = (a: unknown, b: unknown): boolean => a == b;\n');
    // Lint-clean, but double quotes and no semicolon (the formatter's single quotes, semicolons).
    await writeFile(join(dir, 'src/core/unformatted.ts'), 'export const name = "kiln"\n');
    await writeFile(join(dir, 'src/core/clean.ts'), "export const ok = 'kiln';\n");
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the repository passes biome ci (lint + format)', async () => {
    const r = await biome(REPO_ROOT, ['ci', '--vcs-enabled=false', '.']);
    assert.equal(r.code, 0, r.out);
  });

  it('a tree with a lint violation and an unformatted file fails, naming each and nothing else', async () => {
    const r = await biome(dir, ['ci', '--vcs-enabled=false', '--colors=off', '.']);
    assert.notEqual(r.code, 0);
    assert.match(r.out, /src\/core\/loose\.ts:\d+:\d+ lint\/suspicious\/noDoubleEquals/);
    assert.match(r.out, /src\/core\/unformatted\.ts format/);
    assert.doesNotMatch(r.out, /clean\.ts/);
  });
});
