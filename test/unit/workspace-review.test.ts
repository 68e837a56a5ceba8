import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { computeChanges, looksBinary, selectChanges } from '../../src/workspace/changes.js';
import { changeContent } from '../../src/workspace/content.js';
import { encodeBase85, quoteGitPath, unifiedDiff } from '../../src/workspace/diff.js';
import { formatScanLine, HostUpperSource, parseScan, scanUpperTs } from '../../src/workspace/scan.js';
import { CASES, NON_UTF8 } from './workspace-cases.js';
import { gitView, mergedTree, readTree, summary, testOpaqueProbe, WsFixture, xattrTools } from './workspace-fixture.js';

/** Applies `patch` with real git to a copy of the lower directory; returns the copy's tree. */
async function gitApplied(f: WsFixture, patch: string): Promise<Record<string, string>> {
  const copy = join(f.root, 'applied');
  execFileSync('cp', ['-a', `${f.lower}/.`, `${copy}/`]);
  const file = join(f.root, 'p.diff');
  await writeFile(file, patch);
  execFileSync('git', ['apply', '--allow-empty', '--check', file], { cwd: copy });
  execFileSync('git', ['apply', '--allow-empty', file], { cwd: copy });
  return gitView(await readTree(copy));
}

describe('workspace review: change list and git patch', () => {
  for (const c of CASES) {
    it(c.name, { skip: c.needsXattr && !xattrTools ? 'neither setfattr nor Python os.setxattr here' : false }, async () => {
      const f = await WsFixture.make();
      try {
        await c.setup(f);
        execFileSync('mkdir', ['-p', join(f.root, 'applied')]);
        assert.deepEqual(summary(await f.changes()), c.changes);
        const all = await f.changes(true);
        assert.deepEqual(summary(all), c.changesWithIgnored ?? c.changes);
        const patch = await unifiedDiff(f.lower, f.source(), all);
        if (all.length === 0) assert.equal(patch, '');
        assert.deepEqual(await gitApplied(f, patch), gitView(await mergedTree(f)), `patch:\n${patch}`);
      } finally {
        await f.close();
      }
    });
  }
});

describe('workspace review: a rewrite past the edit bound', () => {
  it('is one hunk of all lines, and git applies it', async () => {
    const f = await WsFixture.make();
    try {
      execFileSync('mkdir', ['-p', join(f.root, 'applied')]);
      await f.lowerFile('a.txt', 'one\ntwo\nsame\nfour\n');
      await f.upFile('a.txt', 'uno\ndos\nsame\ncuatro');
      await f.lowerFile('b.txt', 'keep\n');
      await f.upFile('b.txt', '');
      const patch = await unifiedDiff(f.lower, f.source(), await f.changes(), { maxEditLength: 2 });
      assert.match(patch, /@@ -1,4 \+1,4 @@\n-one\n-two\n-same\n-four\n\+uno\n\+dos\n\+same\n\+cuatro\n\\ No newline at end of file\n/);
      assert.deepEqual(await gitApplied(f, patch), gitView(await mergedTree(f)));
    } finally {
      await f.close();
    }
  });
});

describe('workspace review: fields', () => {
  let f: WsFixture;
  before(async () => {
    f = await WsFixture.make();
    await f.lowerFile('a.txt', 'a\n');
    await f.lowerFile('bin', Buffer.from([1, 0, 2]));
    await f.lowerFile('x.sh', 'echo\n');
    await f.lowerLink('ln', 'a.txt');
    await f.upFile('a.txt', 'a\nb\n');
    await f.upFile('bin', Buffer.from([1, 0, 2, 3]));
    await f.upFile('x.sh', 'echo\n', 0o755);
    await f.upLink('ln', 'x.sh');
    await f.upFile(NON_UTF8, 'z');
    await f.upDir('newdir', 0o750);
  });
  after(() => f.close());

  it('gives type, size, binary, modes, target and the raw path', async () => {
    const byPath = new Map((await f.changes()).map((c) => [c.path, c]));
    assert.deepEqual(byPath.get('a.txt'), {
      path: 'a.txt',
      pathBase64: Buffer.from('a.txt').toString('base64'),
      status: 'modified',
      type: 'file',
      size: 4,
      binary: false,
      ignored: false,
      modeOld: 0o644,
      modeNew: 0o644,
    });
    assert.equal(byPath.get('bin')?.binary, true);
    assert.deepEqual([byPath.get('x.sh')?.modeOld, byPath.get('x.sh')?.modeNew], [0o644, 0o755]);
    assert.deepEqual([byPath.get('ln')?.type, byPath.get('ln')?.target, byPath.get('ln')?.size], ['symlink', 'x.sh', 4]);
    const odd = byPath.get(NON_UTF8.toString('utf8'))!;
    assert.ok(Buffer.from(odd.pathBase64, 'base64').equals(NON_UTF8));
    assert.deepEqual([byPath.get('newdir')?.type, byPath.get('newdir')?.modeNew], ['directory', 0o750]);
  });

  it('selects a path and everything under it, by text or raw bytes', async () => {
    const all = await f.changes();
    assert.deepEqual(summary(selectChanges(all, ['a.txt', NON_UTF8])), ['modified file a.txt', `added file ${NON_UTF8.toString('utf8')}`]);
    assert.deepEqual(summary(selectChanges(all, ['newdir/'])), ['added directory newdir']);
    assert.deepEqual(selectChanges(all, []), []);
  });

  it('reads either side of a change', async () => {
    const byPath = new Map((await f.changes()).map((c) => [c.path, c]));
    assert.equal((await changeContent(f.lower, f.source(), byPath.get('a.txt')!, 'old'))?.toString(), 'a\n');
    assert.equal((await changeContent(f.lower, f.source(), byPath.get('a.txt')!, 'new'))?.toString(), 'a\nb\n');
    assert.equal((await changeContent(f.lower, f.source(), byPath.get('ln')!, 'new'))?.toString(), 'x.sh');
    assert.equal(await changeContent(f.lower, f.source(), byPath.get('newdir')!, 'new'), undefined);
  });

  it('diffs one path alone', async () => {
    const one = selectChanges(await f.changes(), ['x.sh']);
    assert.equal(await unifiedDiff(f.lower, f.source(), one), 'diff --git a/x.sh b/x.sh\nold mode 100644\nnew mode 100755\n');
  });
});

describe('workspace review: an upper swapped for symlinks after the scan', () => {
  it('reads nothing outside the upper layer', async () => {
    const f = await WsFixture.make();
    try {
      const outside = join(f.root, 'outside');
      await mkdir(join(outside, 'd'), { recursive: true });
      await writeFile(join(outside, 'secret'), 'host secret\n');
      await writeFile(join(outside, 'd/f.txt'), 'host secret too\n');
      await f.lowerFile('secret', 'lower\n');
      await f.lowerFile('d/f.txt', 'lower\n');
      await f.upFile('secret', 'sandbox\n');
      await f.upFile('d/f.txt', 'sandbox\n');
      const stale = await scanUpperTs(f.upper, undefined);
      const source = new HostUpperSource(f.upper, { scan: async () => stale });
      const before = await computeChanges(f.lower, source);
      // the sandbox swaps its entries for symlinks to host paths between the scan and the reads
      await rm(join(f.upper, 'secret'));
      await symlink(join(outside, 'secret'), join(f.upper, 'secret'));
      await rm(join(f.upper, 'd'), { recursive: true });
      await symlink(join(outside, 'd'), join(f.upper, 'd'));
      await assert.rejects(computeChanges(f.lower, source), (e: { code?: string }) => e.code === 'PATH_ESCAPE');
      for (const c of before) await assert.rejects(unifiedDiff(f.lower, source, [c]), (e: { code?: string }) => e.code === 'PATH_ESCAPE', c.path);
    } finally {
      await f.close();
    }
  });
});

describe('workspace review: pieces', () => {
  it('parses the scan format and rejects what is not clean', async () => {
    const f = await WsFixture.make();
    try {
      await f.upFile('a/b c', 'x');
      await f.upLink('a/l', 't');
      await f.whiteout('w');
      const entries = await scanUpperTs(f.upper, testOpaqueProbe);
      assert.deepEqual(parseScan(entries.map(formatScanLine).join('\n')), entries);
      assert.deepEqual(
        entries.map((e) => `${e.kind} ${e.path}`),
        ['dir a', 'file a/b c', 'symlink a/l', 'whiteout w'],
      );
      assert.throws(() => parseScan('{"path":"Li4vZXRj","kind":"file"}'), /line 1: path is not a clean relative path/);
      assert.throws(() => parseScan('\n{"path":"YQ==","kind":"fifo"}'), /line 2: unknown kind/);
    } finally {
      await f.close();
    }
  });

  it('quotes paths and encodes base85 as git does', () => {
    assert.equal(quoteGitPath(Buffer.from('a/plain name.txt')), 'a/plain name.txt');
    assert.equal(quoteGitPath(Buffer.from('a/quo"te\\\t')), '"a/quo\\"te\\\\\\t"');
    assert.equal(quoteGitPath(Buffer.from('a/é')), '"a/\\303\\251"');
    assert.equal(encodeBase85(Buffer.from([0, 0, 0, 0])), '00000');
    assert.equal(encodeBase85(Buffer.from([0xff, 0xff, 0xff, 0xff])), '|NsC0');
  });

  it('calls a file binary on NUL or invalid UTF-8 in the first 8 KiB only', () => {
    assert.equal(looksBinary(Buffer.from('plain\n')), false);
    assert.equal(looksBinary(Buffer.from([0x61, 0])), true);
    assert.equal(looksBinary(Buffer.from([0xe9, 0x0a])), true);
    assert.equal(looksBinary(Buffer.concat([Buffer.alloc(8192, 0x61), Buffer.from([0])])), false);
    // a character cut at the 8 KiB mark is still text
    assert.equal(looksBinary(Buffer.concat([Buffer.alloc(8191, 0x61), Buffer.from('é')])), false);
  });

  it('lists nothing for an empty upper', async () => {
    const f = await WsFixture.make();
    try {
      await f.lowerFile('a', 'a');
      assert.deepEqual(await computeChanges(f.lower, f.source()), []);
    } finally {
      await f.close();
    }
  });
});
