/**
 * Real builds: mmdebstrap + mksquashfs as root, with network access to deb.debian.org.
 * Skipped (with the reason) on machines that cannot run them.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import { type BuildProgressEvent, buildPack, listImages, pruneImages, resolveImage } from '../../src/images/index.js';

function missing(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (mmdebstrap --mode=root)';
  for (const tool of ['mmdebstrap', 'mksquashfs', 'unsquashfs', 'unshare']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is not installed`;
  }
  return undefined;
}
const skip = missing() ?? false;

async function tempDataDir(): Promise<string> {
  // Under /var/tmp, not tmpfs: a root filesystem is hundreds of MB.
  return mkdtemp('/var/tmp/kiln-images-test-');
}

async function buildDirs(dataDir: string): Promise<string[]> {
  return (await readdir(join(dataDir, 'tmp')).catch(() => [])).filter((e) => e.startsWith('image-build-'));
}

async function mountsUnder(dir: string): Promise<string[]> {
  return (await readFile('/proc/self/mountinfo', 'utf8'))
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((p) => p.startsWith(dir));
}

test('builds the shell pack for real, then hits the cache', { skip, timeout: 15 * 60_000 }, async () => {
  const dataDir = await tempDataDir();
  try {
    const events: BuildProgressEvent[] = [];
    const first = await buildPack('shell', { dataDir, onProgress: (e) => events.push(e) });
    assert.equal(first.built, true);
    assert.match(first.imagePath, /shell-[0-9a-f]{16}\.sqfs$/);
    assert.ok(first.sizeBytes > 5e6 && first.sizeBytes < 60e6, `unexpected size ${first.sizeBytes}`);
    for (const phase of ['resolve', 'download', 'unpack', 'configure', 'squash', 'done']) {
      assert.ok(
        events.some((e) => e.phase === phase),
        `no ${phase} progress event`,
      );
    }

    const listing = execFileSync('unsquashfs', ['-lls', first.imagePath], { encoding: 'utf8', maxBuffer: 64e6 });
    assert.match(listing, /squashfs-root\/usr\/bin\/bash$/m);
    assert.match(listing, /squashfs-root\/usr\/bin\/ps$/m);
    assert.match(listing, /squashfs-root\/bin -> usr\/bin$/m);
    assert.match(listing, /^d\S+ (1000\/1000|\S+\/\S+)\s+\d+ .* squashfs-root\/workspace$/m);
    assert.doesNotMatch(listing, /squashfs-root\/usr\/share\/man\/man1\//);
    assert.doesNotMatch(listing, /squashfs-root\/var\/cache\/apt\/archives\/\S+\.deb$/m);
    assert.doesNotMatch(listing, /squashfs-root\/var\/lib\/apt\/lists\/\S+Packages/m);
    const passwd = execFileSync('unsquashfs', ['-cat', first.imagePath, 'etc/passwd'], { encoding: 'utf8' });
    assert.match(passwd, /^sandbox:x:1000:1000:sandbox:\/workspace:/m);

    const manifest = JSON.parse(await readFile(first.manifestPath, 'utf8'));
    assert.equal(manifest.hash, first.hash);
    assert.match(manifest.packageVersions.bash, /^5\./);
    assert.deepEqual(await buildDirs(dataDir), []);
    assert.ok(
      (await readdir(join(dataDir, 'cache', 'apt-archives'))).some((f) => f.startsWith('bash_')),
      'apt cache was not filled',
    );

    const second = await buildPack('shell', { dataDir });
    assert.equal(second.built, false);
    assert.equal(second.imagePath, first.imagePath);
    assert.ok(second.durationMs < 2000);

    const resolved = await resolveImage('shell', dataDir);
    assert.equal(resolved.imagePath, first.imagePath);
    const images = await listImages(dataDir);
    assert.deepEqual(
      images.map((i) => [i.name, i.current]),
      [['shell', true]],
    );
    assert.deepEqual((await pruneImages(dataDir)).removed, []);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});

test('an abort mid-build leaves no temp dir, no mount and no image', { skip, timeout: 5 * 60_000 }, async () => {
  const dataDir = await tempDataDir();
  try {
    const controller = new AbortController();
    const build = buildPack('shell', {
      dataDir,
      signal: controller.signal,
      // Abort once packages are being unpacked: mmdebstrap has mounted /proc etc. by then.
      onProgress: (e) => {
        if (e.phase === 'unpack') controller.abort(new Error('test abort'));
      },
    });
    await assert.rejects(build, /test abort/);
    assert.deepEqual(await buildDirs(dataDir), []);
    assert.deepEqual(await readdir(join(dataDir, 'images')), []);
    assert.deepEqual(await mountsUnder(dataDir), []);
    await assert.rejects(resolveImage('shell', dataDir), /pack shell has no image; run `kiln images build shell`/);
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
});
