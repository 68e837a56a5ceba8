import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { imageHash, listImages, loadPack, pruneImages, resolveImage } from '../../src/images/index.js';

async function fakeImage(dataDir: string, name: string, hash: string, opts: { manifest?: boolean } = {}): Promise<void> {
  const dir = join(dataDir, 'images');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${name}-${hash}.sqfs`), 'hsqs-fake-image');
  if (opts.manifest !== false) {
    await writeFile(join(dir, `${name}-${hash}.json`), JSON.stringify({ name, hash, builtAt: '2026-01-01T00:00:00.000Z' }));
  }
}

test('list, resolve and prune against a fake images dir', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  try {
    const current = imageHash((await loadPack('python')).image);
    await fakeImage(dataDir, 'python', current);
    await fakeImage(dataDir, 'python', '0123456789abcdef');
    await fakeImage(dataDir, 'removedpack', 'fedcba9876543210');
    // A .sqfs without its manifest is an interrupted build, not an image.
    await fakeImage(dataDir, 'node', imageHash((await loadPack('node')).image), { manifest: false });
    // A temp build dir whose owner is dead is garbage; one whose owner lives is not.
    const dead = join(dataDir, 'tmp', 'image-build-go-dead');
    const alive = join(dataDir, 'tmp', 'image-build-go-alive');
    await mkdir(dead, { recursive: true });
    await mkdir(alive, { recursive: true });
    await writeFile(join(dead, 'owner.pid'), '999999999\n');
    await writeFile(join(alive, 'owner.pid'), `${process.pid}\n`);

    const images = await listImages(dataDir);
    assert.deepEqual(
      images.map((i) => [i.name, i.hash, i.current]),
      [
        ['python', '0123456789abcdef', false],
        ['python', current, true],
        ['removedpack', 'fedcba9876543210', false],
      ].sort((a, b) => `${a[0]}-${a[1]}`.localeCompare(`${b[0]}-${b[1]}`)),
    );

    assert.equal((await resolveImage('python', dataDir)).hash, current);
    await assert.rejects(resolveImage('node', dataDir), (e: Error & { code?: string }) => e.code === 'IMAGE_MISSING' && e.message === 'pack node has no image; run `kiln images build node`');
    await assert.rejects(resolveImage('cobol', dataDir), (e: Error & { code?: string }) => e.code === 'UNKNOWN_PACK');

    const pruned = await pruneImages(dataDir);
    assert.equal(pruned.removed.length, 5);
    assert.deepEqual((await readdir(join(dataDir, 'images'))).sort(), [`node-${imageHash((await loadPack('node')).image)}.sqfs`, `python-${current}.json`, `python-${current}.sqfs`].sort());
    assert.deepEqual(await readdir(join(dataDir, 'tmp')), ['image-build-go-alive']);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('listing an empty data dir is empty, not an error', async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'kiln-store-'));
  try {
    assert.deepEqual(await listImages(dataDir), []);
    assert.deepEqual(await pruneImages(dataDir), { removed: [], freedBytes: 0 });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
