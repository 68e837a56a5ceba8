import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadPack, loadPacks, PackDefinitionError, validatePack } from '../../src/images/index.js';

const good = () => ({
  name: 'demo',
  description: 'Demo',
  image: { suite: 'bookworm', packages: ['bash'] },
  env: { HOME: '/workspace' },
  run: { fileName: 'main.sh', command: ['bash', '{file}'], projectCommand: ['bash', '{entrypoint}'] },
  versionCommand: ['bash', '--version'],
});

function expectFieldError(raw: unknown, field: RegExp): void {
  assert.throws(
    () => validatePack(raw, 'demo.json', 'demo'),
    (e: unknown) => {
      assert.ok(e instanceof PackDefinitionError, `expected PackDefinitionError, got ${String(e)}`);
      assert.match(e.message, /demo\.json/);
      assert.match(e.message, field);
      return true;
    },
  );
}

test('the repo pack definitions are valid', async () => {
  const packs = await loadPacks();
  assert.deepEqual(
    packs.map((p) => p.name),
    ['base', 'code-interpreter', 'go', 'node', 'python', 'shell'],
  );
  const go = packs.find((p) => p.name === 'go')!;
  assert.equal(go.env.GOCACHE, '/tmp/.cache/go-build');
  // go test of anything importing net or os/user needs gcc unless cgo is off; the pack has no gcc.
  assert.equal(go.env.CGO_ENABLED, '0');
  const python = packs.find((p) => p.name === 'python')!;
  for (const pkg of ['python3-pip', 'python3-venv', 'tzdata']) assert.ok(python.image.packages.includes(pkg), `python pack lacks ${pkg}`);
  assert.ok(packs.find((p) => p.name === 'node')!.image.packages.includes('npm'));
  const base = packs.find((p) => p.name === 'base')!;
  for (const pkg of ['git', 'curl', 'wget', 'jq', 'build-essential', 'sqlite3', 'zip', 'unzip', 'xz-utils', 'patch', 'file', 'less', 'vim-tiny']) {
    assert.ok(base.image.packages.includes(pkg), `base pack lacks ${pkg}`);
  }
  assert.deepEqual(go.run.projectCommand, ['go', 'run', '.']);
});

test('a good definition is normalised (default variant, sorted packages)', () => {
  const raw = good();
  raw.image.packages = ['zsh', 'bash', 'bash'];
  const def = validatePack(raw, 'demo.json', 'demo');
  assert.equal(def.image.variant, 'essential');
  assert.deepEqual(def.image.packages, ['bash', 'zsh']);
  assert.deepEqual(def.image.mirrors, []);
});

test('bad definitions name the file and the field', () => {
  expectFieldError([], /\(root\) must be an object/);
  expectFieldError({ ...good(), name: 'Demo!' }, /name "Demo!" does not match/);
  expectFieldError({ ...good(), name: 'other' }, /name is "other" but the file is named demo\.json/);
  expectFieldError({ ...good(), image: { suite: 'bookworm', packages: [] } }, /image\.packages must have at least 1/);
  expectFieldError({ ...good(), image: { suite: 'bookworm', packages: ['ok', 'bad pkg'] } }, /image\.packages\[1\]/);
  expectFieldError({ ...good(), image: { suite: 'bookworm', packages: ['bash'], variant: 'buildd' } }, /image\.variant must be one of/);
  expectFieldError({ ...good(), image: { suite: 'bookworm', packages: ['bash'], extra: 1 } }, /image\.extra is not a known field/);
  expectFieldError({ ...good(), env: { HOME: 3 } }, /env\.HOME must be a string/);
  expectFieldError({ ...good(), run: { fileName: 'a', command: ['bash'], projectCommand: ['x'] } }, /run\.command must contain the "\{file\}"/);
  const { versionCommand: _v, ...noVersion } = good();
  expectFieldError(noVersion, /versionCommand must be an array/);
});

test('loadPack reports bad JSON and unknown packs clearly', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-packs-'));
  try {
    await writeFile(join(dir, 'broken.json'), '{ "name": ');
    await assert.rejects(loadPack('broken', dir), /broken\.json: \(root\) is not valid JSON/);
    await assert.rejects(loadPack('nope', dir), (e: Error & { code?: string }) => e.code === 'UNKNOWN_PACK' && /unknown pack "nope"/.test(e.message));
    await assert.rejects(loadPacks(dir), /broken\.json/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
