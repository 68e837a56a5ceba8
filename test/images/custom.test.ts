/** Custom pack definitions: validation, resolution over a base, hashing, build hooks, errors, facts. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { toolsIn } from '../../src/images/facts.js';
import { imageHash, loadPack, loadPacks, PackDefinitionError, validateCustomPack } from '../../src/images/index.js';
import { bootstrapError, customHooks, mmdebstrapArgs } from '../../src/images/mmdebstrap.js';
import { MmdebstrapProgress } from '../../src/images/progress.js';

const requests = () => ({ name: 'py-requests', base: 'python', packages: ['python3-requests'] });

function expectBodyError(raw: unknown, field: RegExp): void {
  assert.throws(
    () => validateCustomPack(raw, 'request body', undefined, 'INVALID_REQUEST'),
    (e: unknown) => {
      assert.ok(e instanceof PackDefinitionError, `expected PackDefinitionError, got ${String(e)}`);
      assert.equal(e.code, 'INVALID_REQUEST');
      assert.equal(e.status, 400);
      assert.match(e.message, field);
      return true;
    },
  );
}

async function withDirs<T>(fn: (custom: string) => Promise<T>): Promise<T> {
  const custom = await mkdtemp(join(tmpdir(), 'kiln-custom-'));
  try {
    return await fn(custom);
  } finally {
    await rm(custom, { recursive: true, force: true });
  }
}

describe('custom pack definitions', () => {
  it('a sent definition with a mistake is a 400 naming the field and the limit', () => {
    expectBodyError({ base: 'python' }, /name must be a non-empty string/);
    expectBodyError({ ...requests(), colour: 'red' }, /\(root\)\.colour is not a known field/);
    expectBodyError({ ...requests(), base: 'py-requests' }, /base is the pack itself/);
    expectBodyError({ ...requests(), packages: ['python3 requests'] }, /packages\[0\] "python3 requests" does not match/);
    expectBodyError({ ...requests(), packages: Array.from({ length: 201 }, (_, i) => `p${i}`) }, /packages has 201 items; the limit is 200/);
    expectBodyError({ ...requests(), files: [{ path: 'etc/x', content: '' }] }, /files\[0\]\.path "etc\/x" must be an absolute/);
    expectBodyError({ ...requests(), files: [{ path: '/etc/../x', content: '' }] }, /must be an absolute, normalised/);
    expectBodyError({ ...requests(), files: [{ path: '/tmp/x', content: '' }] }, /files\[0\]\.path "\/tmp\/x" is under \/tmp/);
    expectBodyError(
      {
        ...requests(),
        files: [
          { path: '/etc/x', content: 'a' },
          { path: '/etc/x', content: 'b' },
        ],
      },
      /files\[1\]\.path "\/etc\/x" appears twice/,
    );
    expectBodyError({ ...requests(), files: [{ path: '/etc/x', content: '!!', encoding: 'base64' }] }, /files\[0\]\.content is not valid base64/);
    expectBodyError({ ...requests(), files: [{ path: '/etc/x', content: '', mode: '999' }] }, /files\[0\]\.mode "999" does not match/);
    expectBodyError({ ...requests(), files: [{ path: '/etc/x', content: 'x'.repeat(1024 * 1024 + 1) }] }, /is 1048577 bytes; the limit is 1048576 per file/);
    expectBodyError({ ...requests(), setup: ['ok', ''] }, /setup\[1\] must be a non-empty string/);
    expectBodyError({ ...requests(), run: { fileName: 'a.py', command: ['python3'], projectCommand: ['x'] } }, /run\.command must contain the "\{file\}"/);
  });

  it('resolves over its base: packages added, env merged, run kept, files and setup in the hashed image', async () => {
    await withDirs(async (customDir) => {
      const raw = { ...requests(), env: { EXTRA: '1' }, files: [{ path: '/etc/motd', content: 'hi\n', mode: '0600' }], setup: ['echo ok > /opt/ok'] };
      await writeFile(join(customDir, 'py-requests.json'), JSON.stringify(raw));
      const sources = { builtinDir: join(process.cwd(), 'images/packs'), customDir };
      const def = await loadPack('py-requests', sources);
      const python = await loadPack('python', sources);
      assert.deepEqual(def.image.packages, [...python.image.packages, 'python3-requests'].sort());
      assert.equal(def.env.EXTRA, '1');
      assert.equal(def.env.PYTHONUNBUFFERED, '1');
      assert.deepEqual(def.run, python.run);
      assert.equal(def.base, 'python');
      assert.equal(def.version, 1);
      assert.deepEqual(def.image.files, [{ path: '/etc/motd', content: 'hi\n', encoding: 'utf8', mode: 0o600 }]);
      assert.deepEqual(def.image.setup, ['echo ok > /opt/ok']);

      // Every part of the image is in the cache key; env is not.
      const hash = imageHash(def.image);
      assert.notEqual(hash, imageHash(python.image));
      assert.notEqual(hash, imageHash({ ...def.image, setup: ['echo other'] }));
      assert.notEqual(hash, imageHash({ ...def.image, files: [{ ...def.image.files![0]!, content: 'bye\n' }] }));
      await writeFile(join(customDir, 'py-requests.json'), JSON.stringify({ ...raw, env: { EXTRA: '2' } }));
      assert.equal(imageHash((await loadPack('py-requests', sources)).image), hash);

      // Listed after the built-in packs; a custom pack shadowing a built-in one is ignored.
      await writeFile(join(customDir, 'python.json'), JSON.stringify({ name: 'python', base: 'shell' }));
      const names = (await loadPacks(sources)).map((p) => p.name);
      assert.deepEqual(names, ['base', 'code-interpreter', 'go', 'node', 'python', 'shell', 'py-requests']);
      assert.equal((await loadPack('python', sources)).base, undefined);
    });
  });

  it('a custom pack may build on a custom pack, but a loop is an error naming it', async () => {
    await withDirs(async (customDir) => {
      const sources = { builtinDir: join(process.cwd(), 'images/packs'), customDir };
      await writeFile(join(customDir, 'a.json'), JSON.stringify({ name: 'a', base: 'shell', packages: ['jq'] }));
      await writeFile(join(customDir, 'b.json'), JSON.stringify({ name: 'b', base: 'a', packages: ['curl'] }));
      assert.ok((await loadPack('b', sources)).image.packages.includes('jq'));
      await writeFile(join(customDir, 'a.json'), JSON.stringify({ name: 'a', base: 'b' }));
      await assert.rejects(loadPack('b', sources), /base makes a chain of more than 4 custom packs \(or a loop\)/);
      // One broken custom pack does not hide the others when the caller asks to skip it.
      await writeFile(join(customDir, 'c.json'), JSON.stringify({ name: 'c', base: 'shell' }));
      const skipped: string[] = [];
      const loaded = await loadPacks(sources, (name) => skipped.push(name));
      assert.deepEqual(skipped.sort(), ['a', 'b']);
      assert.ok(loaded.some((p) => p.name === 'c'));
    });
  });
});

describe('custom pack build steps', () => {
  const spec = {
    suite: 'bookworm',
    variant: 'essential' as const,
    packages: ['python3'],
    mirrors: [],
    files: [{ path: "/etc/it's.conf", content: 'x', encoding: 'utf8' as const, mode: 0o640 }],
    setup: ['pip install --break-system-packages x'],
  };

  it('files and setup run through chroot (paths resolve inside the image), each step announced', () => {
    const hooks = customHooks(spec, '/build/files');
    assert.equal(hooks.length, 3);
    assert.match(hooks[0]!, /^--customize-hook=echo 'kiln: writing 1 file\(s\)' && chroot "\$1" \/bin\/sh -c '.*chmod 640 "\$0"' '\/etc\/it'\\''s\.conf' < '\/build\/files\/0'$/);
    assert.match(
      hooks[1]!,
      /^--customize-hook=echo 'kiln: setup 1\/1: pip install --break-system-packages x' && chroot "\$1" \/usr\/bin\/env -i PATH=\S+ HOME=\/root .* \/bin\/sh -ec 'pip install --break-system-packages x' 2>&1 \|\| \{ rc=\$\?; echo "kiln: setup 1\/1 failed with exit \$rc"; exit \$rc; \}$/,
    );
    assert.match(hooks[2]!, /chown -R 1000:1000 \/workspace/);
    // After the apt cache hook, so the packages are there when setup runs.
    const args = mmdebstrapArgs({ spec, rootDir: '/r', aptCacheDir: '/c', filesDir: '/build/files' });
    const cacheHook = args.findIndex((a) => a.startsWith('--customize-hook=for f in'));
    assert.ok(cacheHook >= 0 && args.indexOf(hooks[0]!) > cacheHook && args.indexOf(hooks[1]!) > args.indexOf(hooks[0]!));
    // A built-in pack gets none of them.
    assert.equal(mmdebstrapArgs({ spec: { ...spec, files: undefined, setup: undefined }, rootDir: '/r', aptCacheDir: '/c' }).filter((a) => a.includes('kiln:')).length, 0);
  });

  it('a package apt cannot find is PACK_BUILD_FAILED naming it; a failed setup step names the step and its output', () => {
    const missing = bootstrapError('p', 'bookworm', 1, ['I: downloading packages with apt...', 'E: Unable to locate package python3-nosuch', 'E: apt-get ... failed']);
    assert.equal(missing.code, 'PACK_BUILD_FAILED');
    assert.equal(missing.status, 422);
    assert.match(missing.message, /^Debian package "python3-nosuch" does not exist in bookworm/);
    assert.deepEqual(missing.details, { pack: 'p', package: 'python3-nosuch' });
    assert.match(bootstrapError('p', 'bookworm', 1, ["E: Package 'foo' has no installation candidate"]).message, /"foo" does not exist/);

    const setup = bootstrapError('p', 'bookworm', 1, ['kiln: setup 1/2: make it', 'make: *** No rule to make target', 'kiln: setup 1/2 failed with exit 2', 'E: hook failed']);
    assert.equal(setup.code, 'PACK_BUILD_FAILED');
    assert.match(setup.message, /^setup 1\/2 failed with exit 2 \(make it\); its last output:\n {2}make: \*\*\* No rule/);
    assert.equal(bootstrapError('p', 'bookworm', 1, ['E: mount failed']).code, 'INTERNAL');
  });

  it('setup steps and their output become "setup" progress events', () => {
    const p = new MmdebstrapProgress('p');
    const events = ['kiln: setup 1/1: pip install x', 'Collecting x', 'I: cleaning package lists and apt cache...'].map((l) => p.feed(l));
    assert.deepEqual(
      events.map((e) => [e?.phase, e?.message]),
      [
        ['setup', 'setup 1/1: pip install x'],
        ['setup', 'Collecting x'],
        ['configure', 'cleaning package lists and caches'],
      ],
    );
  });

  it('lists the common tools an image has, without following absolute links out of it', async () => {
    const root = await mkdtemp(join(tmpdir(), 'kiln-tools-'));
    try {
      await mkdir(join(root, 'usr/bin'), { recursive: true });
      await mkdir(join(root, 'usr/local/bin'), { recursive: true });
      await writeFile(join(root, 'usr/bin/git'), '');
      await writeFile(join(root, 'usr/local/bin/jq'), '');
      // Dangling on the host, present in the image: counts, as in the image it resolves.
      await symlink('/etc/alternatives/vi-not-on-host', join(root, 'usr/bin/vi'));
      assert.deepEqual(await toolsIn(root), ['git', 'jq', 'vi']);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
