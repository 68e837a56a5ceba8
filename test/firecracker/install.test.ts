/**
 * `kiln firecracker install`: verification before install, atomic install, nothing half-installed
 * when offline or on a hash mismatch. A local tarball served on 127.0.0.1 stands in for GitHub.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { installFirecracker, PINNED_RELEASES, releaseUrl } from '../../src/backends/firecracker/install.js';
import command from '../../src/cli/commands/firecracker.js';

async function releaseTarball(version: string): Promise<Buffer> {
  const pack = tar.pack();
  const dir = `release-${version}-x86_64`;
  pack.entry({ name: `${dir}/`, type: 'directory' });
  pack.entry({ name: `${dir}/firecracker-${version}-x86_64`, mode: 0o755 }, '#!/bin/sh\necho "Firecracker v1.10.1 (fake)"\n');
  pack.entry({ name: `${dir}/jailer-${version}-x86_64`, mode: 0o755 }, '#!/bin/sh\necho jailer\n');
  pack.entry({ name: `${dir}/LICENSE` }, 'Apache-2.0\n');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return gzipSync(Buffer.concat(chunks));
}

async function serve(body: Buffer): Promise<{ url: string; close(): void }> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'Content-Length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/firecracker-v1.10.1-x86_64.tgz`, close: () => server.close() };
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('pinned release: v1.10.1 has a sha256 for x86_64 and the official URL', () => {
  assert.match(PINNED_RELEASES['v1.10.1']!.x86_64!, /^[0-9a-f]{64}$/);
  assert.equal(releaseUrl('v1.10.1', 'x86_64'), 'https://github.com/firecracker-microvm/firecracker/releases/download/v1.10.1/firecracker-v1.10.1-x86_64.tgz');
});

test('a wrong hash installs nothing (the pinned hash does not match a fake tarball)', async () => {
  const tgz = await releaseTarball('v1.10.1');
  const srv = await serve(tgz);
  const dir = await mkdtemp(join(tmpdir(), 'kfc-inst-'));
  try {
    const e = (await installFirecracker({ version: 'v1.10.1', dir, url: srv.url, arch: 'x86_64' }).then(
      () => undefined,
      (x: unknown) => x,
    )) as Error;
    assert.match(e.message, new RegExp(`sha256 mismatch .*expected ${PINNED_RELEASES['v1.10.1']!.x86_64}, got ${sha(tgz)}\\. Nothing was installed`));
    assert.deepEqual(await readdir(dir), [], 'no binary, no temp file');
    const e2 = (await installFirecracker({ dir, url: srv.url, arch: 'x86_64', sha256: '0'.repeat(64) }).then(
      () => undefined,
      (x: unknown) => x,
    )) as Error;
    assert.match(e2.message, /sha256 mismatch/);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    srv.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('the right hash installs firecracker and jailer atomically, executable, no temp files left', async () => {
  const tgz = await releaseTarball('v1.10.1');
  const srv = await serve(tgz);
  const dir = await mkdtemp(join(tmpdir(), 'kfc-inst-'));
  try {
    await writeFile(join(dir, 'firecracker'), 'old version\n');
    const r = await installFirecracker({ dir, url: srv.url, arch: 'x86_64', sha256: sha(tgz) });
    assert.equal(r.firecrackerPath, join(dir, 'firecracker'));
    assert.equal(r.jailerPath, join(dir, 'jailer'));
    assert.deepEqual((await readdir(dir)).sort(), ['firecracker', 'jailer']);
    assert.match(await readFile(join(dir, 'firecracker'), 'utf8'), /Firecracker v1\.10\.1 \(fake\)/);
    assert.equal((await stat(join(dir, 'firecracker'))).mode & 0o777, 0o755);
  } finally {
    srv.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('offline: a clear error, nothing installed', async () => {
  const srv = await serve(Buffer.alloc(0));
  const deadUrl = srv.url;
  srv.close();
  await new Promise((r) => setTimeout(r, 20));
  const dir = await mkdtemp(join(tmpdir(), 'kfc-inst-'));
  try {
    const e = (await installFirecracker({ dir, url: deadUrl, arch: 'x86_64' }).then(
      () => undefined,
      (x: unknown) => x,
    )) as Error;
    assert.match(e.message, /cannot download .* \(ECONNREFUSED\): this host seems offline .*nothing was installed/);
    assert.deepEqual(await readdir(dir), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('an unpinned version needs --sha256; a tarball without the binary installs nothing', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-inst-'));
  try {
    const e = (await installFirecracker({ version: '1.12.0', dir, arch: 'x86_64' }).then(
      () => undefined,
      (x: unknown) => x,
    )) as Error;
    assert.match(e.message, /no pinned sha256 for Firecracker v1\.12\.0 \(x86_64\); pass --sha256/);
    const other = await releaseTarball('v9.9.9');
    const file = join(dir, 'other.tgz');
    await writeFile(file, other);
    const e2 = (await installFirecracker({ version: 'v1.10.1', dir: join(dir, 'bin'), url: `file://${file}`, arch: 'x86_64', sha256: sha(other) }).then(
      () => undefined,
      (x: unknown) => x,
    )) as Error;
    assert.match(e2.message, /has no release-v1\.10\.1-x86_64\/firecracker-v1\.10\.1-x86_64/);
    assert.deepEqual(await readdir(join(dir, 'bin')), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('CLI: kiln firecracker install returns 0 on success, 1 on a mismatch, 2 on bad usage', async () => {
  const tgz = await releaseTarball('v1.10.1');
  const srv = await serve(tgz);
  const dir = await mkdtemp(join(tmpdir(), 'kfc-inst-'));
  const log = console.log;
  const err = console.error;
  console.log = () => undefined;
  console.error = () => undefined;
  try {
    assert.equal(command.name, 'firecracker');
    assert.equal(await command.run(['install', '--dir', dir, '--url', srv.url, '--sha256', 'f'.repeat(64)]), 1);
    assert.deepEqual(await readdir(dir), []);
    assert.equal(await command.run(['install', '--dir', dir, '--url', srv.url, '--sha256', sha(tgz)]), 0);
    assert.deepEqual((await readdir(dir)).sort(), ['firecracker', 'jailer']);
    assert.equal(await command.run(['install', '--bogus']), 2);
  } finally {
    console.log = log;
    console.error = err;
    srv.close();
    await rm(dir, { recursive: true, force: true });
  }
});
