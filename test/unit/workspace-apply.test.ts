import assert from 'node:assert/strict';
import { chown, lstat, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isKilnError } from '../../src/core/errors.js';
import { approve, reject, type Workspace } from '../../src/workspace/apply.js';
import { initWorkspaceState, readWorkspaceState } from '../../src/workspace/state.js';
import { CASES } from './workspace-cases.js';
import { mergedTree, readTree, summary, WsFixture, xattrTools } from './workspace-fixture.js';

const wsOf = (f: WsFixture): Workspace => ({ hostDir: f.lower, upperDir: f.upper, upper: f.source(), workspaceDir: f.state });
const HOST_UID = 1234;

async function withFixture(fn: (f: WsFixture) => Promise<void>): Promise<void> {
  const f = await WsFixture.make();
  try {
    await fn(f);
  } finally {
    await f.close();
  }
}

/** The host project before the workspace: files owned by HOST_UID, state recorded after. */
async function project(f: WsFixture): Promise<void> {
  await f.lowerFile('a.txt', 'a\n');
  await f.lowerFile('b.txt', 'b\n');
  await f.lowerFile('src/x.c', 'x\n');
  await f.lowerFile('src/y.c', 'y\n');
  await f.lowerDir('sub');
  await chown(f.lower, HOST_UID, HOST_UID);
  await chown(join(f.lower, 'a.txt'), 4321, 4321);
  await initWorkspaceState(f.state);
  await sleep(20); // later host writes get a later ctime than the workspace's creation
}

describe('workspace approve', () => {
  for (const c of CASES) {
    it(`makes the host equal to the merged view, once: ${c.name}`, { skip: c.needsXattr && !xattrTools ? 'no xattr tool' : false }, () =>
      withFixture(async (f) => {
        await c.setup(f);
        await initWorkspaceState(f.state);
        const merged = await mergedTree(f);
        const expected = (await f.changes(true)).map((x) => x.path);
        assert.equal(expected.length, (c.changesWithIgnored ?? c.changes).length);
        assert.deepEqual((await approve(wsOf(f), undefined, { ignored: true })).applied, expected);
        assert.deepEqual(await readTree(f.lower), merged);
        assert.deepEqual(await f.changes(true), []);
        assert.deepEqual((await approve(wsOf(f), undefined, { ignored: true })).applied, [], 'the second approve applies nothing');
      }),
    );
  }

  it('leaves gitignored paths out unless asked', () =>
    withFixture(async (f) => {
      await CASES.find((c) => c.name.startsWith('gitignored'))!.setup(f);
      await initWorkspaceState(f.state);
      assert.deepEqual((await approve(wsOf(f))).applied, ['src/main.c', 'sub/keep.log']);
      await assert.rejects(lstat(join(f.lower, 'node_modules')));
      assert.equal((await approve(wsOf(f), undefined, { ignored: true })).applied.length, 6);
      assert.equal(await readFile(join(f.lower, 'node_modules/left-pad/index.js'), 'utf8'), 'module.exports = 1;\n');
    }));

  it('gives new entries the host directory owner and keeps an existing file owner', () =>
    withFixture(async (f) => {
      await project(f);
      await f.upFile('new/deep.txt', 'n\n');
      await f.upFile('a.txt', 'a2\n', 0o4755);
      await f.upLink('ln', 'a.txt');
      assert.deepEqual((await approve(wsOf(f))).applied, ['a.txt', 'ln', 'new', 'new/deep.txt']);
      for (const p of ['new', 'new/deep.txt', 'ln']) assert.equal((await lstat(join(f.lower, p))).uid, HOST_UID, p);
      const a = await lstat(join(f.lower, 'a.txt'));
      assert.deepEqual([a.uid, a.mode & 0o7777], [4321, 0o755], 'owner kept, set-id bits dropped');
    }));

  it('approves a subset, with the created directories it needs', () =>
    withFixture(async (f) => {
      await project(f);
      await f.upFile('a.txt', 'A\n');
      await f.upFile('src/x.c', 'X\n');
      await f.upFile('lib/one/two.c', '2\n');
      await f.whiteout('b.txt');
      assert.deepEqual((await approve(wsOf(f), ['src', 'lib/one/two.c'])).applied, ['lib', 'lib/one', 'lib/one/two.c', 'src/x.c']);
      assert.deepEqual(summary(await f.changes()), ['modified file a.txt', 'deleted file b.txt']);
      assert.deepEqual((await approve(wsOf(f), ['b.txt'])).applied, ['b.txt']);
      await assert.rejects(lstat(join(f.lower, 'b.txt')));
    }));

  it('refuses host paths changed since the workspace was made, then writes them when forced', () =>
    withFixture(async (f) => {
      await project(f);
      await f.upFile('a.txt', 'sandbox\n');
      await f.upFile('b.txt', 'sandbox b\n');
      await f.whiteout('src');
      await writeFile(join(f.lower, 'a.txt'), 'host edit\n');
      await writeFile(join(f.lower, 'src/late.c'), 'made on the host after\n');
      const err = await approve(wsOf(f)).catch((e) => e);
      assert.ok(isKilnError(err) && err.code === 'WORKSPACE_CONFLICT' && err.status === 409, String(err));
      assert.deepEqual(err.details?.conflicts, ['a.txt', 'src/late.c']);
      assert.equal(await readFile(join(f.lower, 'b.txt'), 'utf8'), 'b\n', 'nothing written when refused');
      assert.deepEqual((await approve(wsOf(f), ['b.txt'])).applied, ['b.txt'], 'an untouched path goes through');
      assert.deepEqual((await approve(wsOf(f), undefined, { force: true })).applied, ['a.txt', 'src', 'src/late.c', 'src/x.c', 'src/y.c']);
      assert.equal(await readFile(join(f.lower, 'a.txt'), 'utf8'), 'sandbox\n');
      await assert.rejects(lstat(join(f.lower, 'src')));
      // kiln's own write is no conflict for the next approve; a host edit after it is
      await f.upFile('b.txt', 'sandbox b again\n');
      assert.deepEqual((await approve(wsOf(f))).applied, ['b.txt']);
      await f.upFile('b.txt', 'sandbox b, third\n');
      await sleep(20);
      await writeFile(join(f.lower, 'b.txt'), 'host again\n');
      await assert.rejects(approve(wsOf(f)), /WORKSPACE_CONFLICT|changed since/);
      assert.ok(Object.keys((await readWorkspaceState(f.state)).written).length >= 6);
    }));

  it('never writes through a host directory swapped for a symlink', () =>
    withFixture(async (f) => {
      await project(f);
      const outside = join(f.root, 'outside');
      await mkdir(outside);
      await f.upFile('sub/new.txt', 'n\n');
      await rm(join(f.lower, 'sub'), { recursive: true });
      await symlink(outside, join(f.lower, 'sub'));
      const err = await approve(wsOf(f)).catch((e) => e);
      assert.equal(err.code, 'WORKSPACE_CONFLICT');
      assert.deepEqual(err.details.conflicts, ['sub']);
      await approve(wsOf(f), undefined, { force: true });
      assert.deepEqual(await readTree(outside), {});
      assert.ok((await lstat(join(f.lower, 'sub'))).isDirectory());
      assert.equal(await readFile(join(f.lower, 'sub/new.txt'), 'utf8'), 'n\n');
    }));
});

describe('workspace reject (no sandbox running)', () => {
  for (const c of CASES) {
    it(`rejects everything, the merged view is the host directory again: ${c.name}`, { skip: c.needsXattr && !xattrTools ? 'no xattr tool' : false }, () =>
      withFixture(async (f) => {
        await c.setup(f);
        const before = await readTree(f.lower);
        const expected = (await f.changes(true)).map((x) => x.path);
        assert.deepEqual((await reject(wsOf(f))).rejected, expected);
        assert.deepEqual(await f.changes(true), []);
        assert.deepEqual(await mergedTree(f), before);
        assert.deepEqual(await readTree(f.lower), before, 'the host directory is not touched');
      }),
    );
  }

  it('rejects some paths and keeps the rest', () =>
    withFixture(async (f) => {
      await project(f);
      await f.upFile('a.txt', 'A\n');
      await f.upFile('src/x.c', 'X\n');
      await f.whiteout('b.txt');
      await f.upFile('new/n.txt', 'n\n');
      assert.deepEqual((await reject(wsOf(f), ['b.txt', 'new'])).rejected, ['b.txt', 'new', 'new/n.txt']);
      assert.deepEqual(summary(await f.changes()), ['modified file a.txt', 'modified file src/x.c']);
    }));

  it('copies a deleted entry back under an opaque directory', { skip: xattrTools ? false : 'no xattr tool' }, () =>
    withFixture(async (f) => {
      await CASES.find((c) => c.name === 'opaque directory')!.setup(f);
      assert.deepEqual((await reject(wsOf(f), ['d/gone.txt', 'd/sub'])).rejected, ['d/gone.txt', 'd/sub/z.txt']);
      assert.deepEqual(summary(await f.changes()), ['added file d/new.txt']);
      const merged = await mergedTree(f);
      assert.equal(merged['d/gone.txt']?.content, 'gone\n');
      assert.equal(merged['d/sub/z.txt']?.content, 'z\n');
    }),
  );

  it('asks to reject a deleted directory as a whole', () =>
    withFixture(async (f) => {
      await project(f);
      await f.whiteout('src');
      await assert.rejects(reject(wsOf(f), ['src/x.c']), /reject src as a whole/);
      assert.deepEqual((await reject(wsOf(f), ['src'])).rejected, ['src', 'src/x.c', 'src/y.c']);
      assert.deepEqual(await f.changes(), []);
    }));
});
