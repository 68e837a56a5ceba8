/**
 * Custom packs built for real through the service (mmdebstrap from the Debian mirror, namespace
 * backend): files and setup commands, the content-hash cache, versions, a busy pack, a package that
 * does not exist, a failing setup step, live definitions in the operator folder, and removal.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type CustomPackDefinition, KilnApiError, type KilnClient, type PackBuildEvent } from '../../sdk/src/index.js';
import { type PackServer, startPackServer, type TestServer, withSandbox } from '../parity/fixture.js';

const ADMIN = 'custom-packs-admin';
const PACK = 'test-greeter';
const dataDir = process.env.KILN_DATA_DIR ?? '/var/lib/kiln';

const greeter = (setupExtra: string[] = []): CustomPackDefinition => ({
  name: PACK,
  base: 'shell',
  description: 'shell with a greeting',
  files: [
    { path: '/opt/greet/hello.txt', content: 'hello\n', mode: '0444' },
    { path: '/workspace/README', content: 'read me\n' },
    { path: '/usr/local/bin/greet', content: Buffer.from('#!/bin/sh\necho "greetings, $1"\n').toString('base64'), encoding: 'base64', mode: '0755' },
  ],
  setup: ['echo "built by setup" > /opt/greet/setup.txt', ...setupExtra],
  env: { GREETING: 'hi' },
});

async function collect(events: AsyncGenerator<PackBuildEvent>): Promise<PackBuildEvent[]> {
  const out: PackBuildEvent[] = [];
  for await (const e of events) out.push(e);
  return out;
}

async function imagesOf(name: string): Promise<string[]> {
  return (await readdir(join(dataDir, 'images')).catch(() => [] as string[])).filter((f) => f.startsWith(`${name}-`));
}

describe('custom packs, built for real', { skip: process.getuid?.() === 0 ? undefined : 'needs root (namespace backend, mmdebstrap)', timeout: 20 * 60_000 }, () => {
  let t: TestServer;
  let kiln: KilnClient;
  let customDir: string;
  let packs: PackServer | undefined;
  before(async () => {
    packs = await startPackServer(ADMIN);
    ({ t, admin: kiln, customDir } = packs);
  });
  after(async () => {
    await packs?.close([PACK, 'test-nosuch', 'hand-made']);
  });

  it('a package that does not exist fails the build with its name, and leaves nothing behind', async () => {
    const err = await kiln.createPack({ name: 'test-nosuch', base: 'shell', packages: ['kiln-no-such-package'] }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof KilnApiError, String(err));
    assert.equal(err.status, 422);
    assert.equal(err.code, 'PACK_BUILD_FAILED');
    assert.match(err.message, /Debian package "kiln-no-such-package" does not exist in bookworm/);
    assert.deepEqual(await readdir(customDir), []);
    assert.deepEqual(await imagesOf('test-nosuch'), []);
    const status = (await kiln.pack('shell').then(() => kiln.packs())).find((p) => p.name === 'test-nosuch');
    assert.equal(status, undefined, 'a failed pack is not listed');
  });

  it('files and setup commands end up in the image; progress shows each setup step', async () => {
    // Two requests for one new pack at once: one builds, the other is refused (not a second build).
    const [streamed, twin] = await Promise.allSettled([collect(kiln.createPackStream(greeter())), kiln.createPack(greeter())]);
    assert.equal(twin.status, 'rejected');
    assert.ok(twin.status === 'rejected' && twin.reason instanceof KilnApiError && twin.reason.code === 'PACK_CONFLICT', String(twin.status === 'rejected' && twin.reason));
    assert.equal(streamed.status, 'fulfilled');
    const events = streamed.status === 'fulfilled' ? streamed.value : [];
    const last = events.at(-1)!;
    assert.equal(last.type, 'result', JSON.stringify(last));
    const setup = events.flatMap((e) => (e.type === 'progress' && e.phase === 'setup' ? [e.message] : []));
    // A cache hit from an earlier run shows no steps; a build shows both.
    if (last.type === 'result' && last.build.result?.built) {
      assert.ok(setup.includes('writing 3 file(s)'), setup.join(' | '));
      assert.ok(setup.includes('setup 1/1: echo "built by setup" > /opt/greet/setup.txt'), setup.join(' | '));
    }
    if (last.type === 'result') assert.equal(last.pack.version, 1);

    await withSandbox(t.client, { pack: PACK }, async (id) => {
      const r = await t.client.sandboxes.exec(id, {
        cmd: 'cat /opt/greet/hello.txt /opt/greet/setup.txt && greet "$GREETING" && stat -c "%n %a" /opt/greet/hello.txt /usr/local/bin/greet /workspace/README',
        cwd: '/workspace',
      });
      assert.equal(r.exitCode, 0, r.stderr);
      assert.equal(r.stdout, 'hello\nbuilt by setup\ngreetings, hi\n/opt/greet/hello.txt 444\n/usr/local/bin/greet 755\n/workspace/README 644\n');
    });
  });

  it('the same definition again is a cache hit with the same version; a changed one is the next version', async () => {
    const again = await kiln.createPack(greeter());
    assert.equal(again.build.result?.built, false);
    assert.equal(again.pack.version, 1);
    const hash1 = again.pack.imageHash;

    const stream = kiln.createPackStream(greeter(['echo v2 > /opt/greet/v2.txt']));
    const first = await stream.next();
    assert.equal(first.value?.type, 'accepted');
    // While it builds, the pack is busy: a second build and a removal are refused.
    await assert.rejects(kiln.createPack(greeter()), (e: KilnApiError) => e.status === 409 && e.code === 'PACK_CONFLICT' && /already being built/.test(e.message));
    await assert.rejects(kiln.deletePack(PACK), (e: KilnApiError) => e.status === 409 && /is being built/.test(e.message));
    const rest: PackBuildEvent[] = [];
    for await (const e of stream) rest.push(e);
    const last = rest.at(-1)!;
    assert.equal(last.type, 'result', JSON.stringify(last));
    if (last.type === 'result') {
      assert.equal(last.pack.version, 2);
      assert.notEqual(last.pack.imageHash, hash1);
    }
    const stored = JSON.parse(await readFile(join(customDir, `${PACK}.json`), 'utf8'));
    assert.equal(stored.version, 2);

    // The build can be followed again after the fact, from its start.
    const replay = await collect(kiln.followPackBuild(PACK));
    assert.equal(replay[0]!.type, 'accepted');
    assert.equal(replay.at(-1)!.type, 'result');
  });

  it('a failing setup step names the step and its output; the stored version stays', async () => {
    const err = await kiln.createPack(greeter(['echo "about to fail"; exit 3'])).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.ok(err instanceof KilnApiError, String(err));
    assert.equal(err.code, 'PACK_BUILD_FAILED');
    assert.match(err.message, /^setup 2\/2 failed with exit 3 \(echo "about to fail"; exit 3\); its last output:\n {2}about to fail/);
    assert.equal((await kiln.pack(PACK)).version, 2);
    assert.equal((await kiln.pack(PACK)).build?.state, 'failed');
  });

  it('a definition the operator drops into the folder is listed at once, and built on request', async () => {
    await writeFile(join(customDir, 'hand-made.json'), JSON.stringify({ name: 'hand-made', base: 'test-greeter', env: { GREETING: 'hand' } }));
    const p = await kiln.pack('hand-made');
    assert.equal(p.source, 'custom');
    assert.equal(p.base, 'test-greeter');
    // Its image content equals its base's, but images are stored per pack name: not built yet.
    assert.equal(p.imageReady, false);
    await assert.rejects(t.client.sandboxes.create({ pack: 'hand-made' }), (e: KilnApiError) => e.code === 'IMAGE_MISSING' && /kiln images build hand-made/.test(e.message));
    // A pack another one is built on stays until that one is gone.
    await assert.rejects(kiln.deletePack(PACK), (e: KilnApiError) => e.status === 409 && /pack test-greeter is the base of hand-made; remove that first/.test(e.message));
    await kiln.deletePack('hand-made');
  });

  it('removing a pack removes its definition and every image of it', async () => {
    assert.ok((await imagesOf(PACK)).length >= 2, "both versions' images are on disk");
    const r = await kiln.deletePack(PACK);
    assert.ok(r.removed.includes(`${PACK}.json`));
    assert.ok(r.freedBytes > 1e6);
    assert.deepEqual(await imagesOf(PACK), []);
    assert.deepEqual(await readdir(customDir), []);
    await assert.rejects(t.client.sandboxes.create({ pack: PACK }), (e: KilnApiError) => e.code === 'UNKNOWN_PACK');
  });
});
