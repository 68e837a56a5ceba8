/**
 * The workspace review page's logic (web/src/lib/review.ts) under Node: rows and their order, the
 * diff panel's choice per kind of change, text decoding, the upper layer's fill level, and which
 * file stays selected after approve or reject took some away.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Change } from '../../sdk/src/index.js';
import { comparePaths, contentKey, decodeText, describe as describeChange, diffViewOf, MERGE_MAX_BYTES, reviewRows, selectionAfter, summarize, usageOf } from '../../web/src/lib/review.js';

function change(path: string, o: Partial<Change> = {}): Change {
  return { path, pathBase64: Buffer.from(path).toString('base64'), status: 'modified', type: 'file', size: 10, binary: false, ignored: false, ...o };
}

const CHANGES: Change[] = [
  change('src/main.py', { modeOld: 0o644, modeNew: 0o755 }),
  change('node_modules/x/index.js', { status: 'added', ignored: true }),
  change('a.txt', { status: 'deleted' }),
  change('a/b', { status: 'added', type: 'directory', size: 0 }),
  change('a/b/logo.png', { status: 'added', binary: true, size: 2048 }),
  change('link', { type: 'symlink', target: 'src/main.py', modeOld: 0o777, modeNew: 0o777 }),
];

describe('workspace review model', () => {
  it('rows: ignored left out unless shown, a directory followed by its entries, git letters, mode changes', () => {
    const rows = reviewRows(CHANGES, false);
    assert.deepEqual(
      rows.map((r) => [r.letter, r.path, r.modeChange]),
      [
        ['A', 'a/b', undefined],
        ['A', 'a/b/logo.png', undefined],
        ['D', 'a.txt', undefined],
        ['M', 'link', undefined],
        ['M', 'src/main.py', '0644 → 0755'],
      ],
    );
    const all = reviewRows(CHANGES, true);
    assert.equal(all.length, 6);
    assert.deepEqual(
      all.filter((r) => r.ignored).map((r) => r.path),
      ['node_modules/x/index.js'],
    );
    // The input is not reordered in place.
    assert.equal(CHANGES[0]!.path, 'src/main.py');
  });

  it('path order compares component by component', () => {
    const paths = ['a.txt', 'a/b', 'a', 'a b', 'Z', 'a/b c/d', 'a/b/c'];
    assert.deepEqual([...paths].sort(comparePaths), ['Z', 'a', 'a/b', 'a/b/c', 'a/b c/d', 'a b', 'a.txt']);
  });

  it('summary counts each status and the ignored ones', () => {
    assert.deepEqual(summarize(CHANGES), { added: 3, modified: 2, deleted: 1, ignored: 1, total: 6 });
    assert.deepEqual(summarize([]), { added: 0, modified: 0, deleted: 0, ignored: 0, total: 0 });
  });

  it('the diff panel fetches only the sides that exist and shows binary, directory, symlink and big files without a merge view', () => {
    assert.deepEqual(diffViewOf(change('m')), { kind: 'text', old: true, new: true });
    assert.deepEqual(diffViewOf(change('n', { status: 'added' })), { kind: 'text', old: false, new: true });
    assert.deepEqual(diffViewOf(change('d', { status: 'deleted' })), { kind: 'text', old: true, new: false });
    assert.deepEqual(diffViewOf(change('b', { binary: true })), { kind: 'binary' });
    assert.deepEqual(diffViewOf(change('dir', { type: 'directory' })), { kind: 'directory' });
    assert.deepEqual(diffViewOf(change('l', { type: 'symlink', status: 'added', target: 't' })), { kind: 'symlink', old: false, newTarget: 't' });
    assert.deepEqual(diffViewOf(change('l', { type: 'symlink', status: 'deleted', target: 'old' })), { kind: 'symlink', old: true, newTarget: undefined });
    assert.deepEqual(diffViewOf(change('big', { size: MERGE_MAX_BYTES + 1 })), { kind: 'tooLarge', limitBytes: MERGE_MAX_BYTES });
    assert.deepEqual(diffViewOf(change('edge', { size: MERGE_MAX_BYTES })), { kind: 'text', old: true, new: true });
  });

  it('describes a change in one sentence', () => {
    assert.equal(describeChange(CHANGES[0]!), 'File modified (mode 0644 → 0755)');
    assert.equal(describeChange(CHANGES[4]!), 'Binary file added');
    assert.equal(describeChange(CHANGES[3]!), 'Directory added');
    assert.equal(describeChange(CHANGES[5]!), 'Symbolic link modified');
  });

  it('decodes UTF-8 and refuses other bytes', () => {
    assert.equal(decodeText(new TextEncoder().encode('grüß\n')), 'grüß\n');
    assert.equal(decodeText(new Uint8Array([0x66, 0xff, 0x6f])), undefined);
    assert.equal(decodeText(new Uint8Array()), '');
  });

  it('content key changes with the content it stands for', () => {
    const a = change('x', { size: 1 });
    assert.equal(contentKey(a), contentKey({ ...a }));
    assert.notEqual(contentKey(a), contentKey({ ...a, size: 2 }));
    assert.notEqual(contentKey(a), contentKey({ ...a, status: 'deleted' }));
  });

  it('usage levels: ok, warn from 80 %, full from 95 %, a zero limit is 0', () => {
    const GiB = 1 << 30;
    assert.deepEqual(usageOf(0, GiB), { fraction: 0, percent: 0, level: 'ok' });
    assert.equal(usageOf(0.5 * GiB, GiB).percent, 50);
    assert.equal(usageOf(0.79 * GiB, GiB).level, 'ok');
    assert.equal(usageOf(0.8 * GiB, GiB).level, 'warn');
    assert.equal(usageOf(0.95 * GiB, GiB).level, 'full');
    assert.deepEqual(usageOf(2 * GiB, GiB), { fraction: 1, percent: 100, level: 'full' });
    assert.deepEqual(usageOf(5, 0), { fraction: 0, percent: 0, level: 'ok' });
  });

  it('selection after a decision: kept, else the next row, else the previous, else none', () => {
    const before = reviewRows(CHANGES, false);
    const without = (...paths: string[]) =>
      reviewRows(
        CHANGES.filter((c) => !paths.includes(c.path)),
        false,
      );
    assert.equal(selectionAfter(before, without('a.txt'), 'link'), 'link');
    assert.equal(selectionAfter(before, without('a.txt'), 'a.txt'), 'link');
    assert.equal(selectionAfter(before, without('a.txt', 'link', 'src/main.py'), 'link'), 'a/b/logo.png');
    assert.equal(selectionAfter(before, without('src/main.py'), 'src/main.py'), 'link');
    assert.equal(selectionAfter(before, [], 'link'), undefined);
    assert.equal(selectionAfter(before, before, undefined), 'a/b');
    assert.equal(selectionAfter([], before, 'gone'), 'a/b');
  });
});
