/** The workspace situations every review test runs: a lower tree, an upper built on it, the change list expected. */
import { type WsFixture, xattrTools } from './workspace-fixture.js';

export interface WsCase {
  name: string;
  setup(f: WsFixture): Promise<void>;
  /** "status type path" of computeChanges (ignored left out), in order. */
  changes: string[];
  /** With ignored paths included, when that differs. */
  changesWithIgnored?: string[];
  needsXattr?: boolean;
}

const BIN_OLD = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 0, 1, 2, 3, 0xff, 0xfe, 10, 0]);
const BIN_NEW = Buffer.concat([BIN_OLD, Buffer.alloc(3000, 7), Buffer.from([0, 0xc3])]);
export const NON_UTF8 = Buffer.from('caf\xe9 \x80.txt', 'latin1');

const base = async (f: WsFixture): Promise<void> => {
  await f.lowerFile('README.md', 'hello\n');
  await f.lowerFile('src/main.c', 'int main(void) {\n  return 0;\n}\n');
  await f.lowerDir('docs');
};

export const CASES: WsCase[] = [
  {
    name: 'empty change set (copy-ups equal to the lower are no change)',
    async setup(f) {
      await base(f);
      await f.upFile('src/main.c', 'int main(void) {\n  return 0;\n}\n'); // copied up, unchanged
      await f.upDir('docs');
    },
    changes: [],
  },
  {
    name: 'text edit',
    async setup(f) {
      await base(f);
      const lines = Array.from({ length: 40 }, (_, i) => `line ${i}`);
      await f.lowerFile('long.txt', `${lines.join('\n')}\n`);
      lines[3] = 'changed 3';
      lines.splice(30, 2, 'x', 'y', 'z');
      await f.upFile('long.txt', `${lines.join('\n')}\nadded at the end, no newline`);
      await f.upFile('src/main.c', 'int main(void) {\n  return 1;\n}\n');
      await f.lowerFile('win.txt', 'one\r\ntwo\r\nthree\r\n');
      await f.upFile('win.txt', 'one\r\n2\r\nthree\r\nfour');
      await f.lowerFile('was-empty.txt', '');
      await f.upFile('was-empty.txt', 'now text\n');
      await f.lowerFile('now-empty.txt', 'text\nmore');
      await f.upFile('now-empty.txt', '');
    },
    changes: ['modified file long.txt', 'modified file now-empty.txt', 'modified file src/main.c', 'modified file was-empty.txt', 'modified file win.txt'],
  },
  {
    name: 'binary file changed and added',
    async setup(f) {
      await base(f);
      await f.lowerFile('img.png', BIN_OLD);
      await f.upFile('img.png', BIN_NEW);
      await f.upFile('new.bin', Buffer.from([0, 1, 2, 0xff]));
      await f.upFile('latin1.txt', Buffer.from('caf\xe9\n', 'latin1'));
    },
    changes: ['modified file img.png', 'added file latin1.txt', 'added file new.bin'],
  },
  {
    name: 'new and deleted file and directory, a deleted directory with contents',
    async setup(f) {
      await base(f);
      await f.lowerFile('old.txt', 'bye\n');
      await f.lowerFile('lib/a.js', 'a\n');
      await f.lowerFile('lib/deep/b.js', 'b\n');
      await f.lowerLink('lib/link', 'a.js');
      await f.lowerFile('empty-old', '');
      await f.whiteout('old.txt');
      await f.whiteout('lib');
      await f.whiteout('empty-old');
      await f.upFile('pkg/new.ts', 'export const x = 1;\n');
      await f.upFile('pkg/sub/empty', '');
    },
    changes: [
      'deleted file empty-old',
      'deleted directory lib',
      'deleted file lib/a.js',
      'deleted directory lib/deep',
      'deleted file lib/deep/b.js',
      'deleted symlink lib/link',
      'deleted file old.txt',
      'added directory pkg',
      'added file pkg/new.ts',
      'added directory pkg/sub',
      'added file pkg/sub/empty',
    ],
  },
  {
    name: 'symlink created and changed',
    async setup(f) {
      await base(f);
      await f.lowerLink('current', 'src/main.c');
      await f.upLink('current', 'README.md');
      await f.upLink('src/readme', '../README.md');
      await f.upLink('dangling', 'no/such/file');
    },
    changes: ['modified symlink current', 'added symlink dangling', 'added symlink src/readme'],
  },
  {
    name: 'mode change',
    async setup(f) {
      await base(f);
      await f.lowerFile('run.sh', '#!/bin/sh\necho hi\n');
      await f.upFile('run.sh', '#!/bin/sh\necho hi\n', 0o755);
      await f.upDir('docs', 0o700);
    },
    changes: ['modified directory docs', 'modified file run.sh'],
  },
  {
    name: 'type changes: a file becomes a directory, a directory a file, a symlink a file',
    async setup(f) {
      await base(f);
      await f.lowerFile('thing', 'was a file\n');
      await f.lowerFile('box/inner.txt', 'inner\n');
      await f.lowerLink('ln', 'README.md');
      await f.whiteout('thing');
      await f.upDir('thing', 0o755, xattrTools !== undefined); // the overlay makes it opaque
      await f.upFile('thing/now.txt', 'now a dir\n');
      await f.upFile('box', 'now a file\n');
      await f.upFile('ln', 'a file now\n');
    },
    changes: ['modified file box', 'deleted file box/inner.txt', 'modified file ln', 'modified directory thing', 'added file thing/now.txt'],
  },
  {
    name: 'opaque directory',
    needsXattr: true,
    async setup(f) {
      await base(f);
      await f.lowerFile('d/keep.txt', 'keep\n');
      await f.lowerFile('d/gone.txt', 'gone\n');
      await f.lowerFile('d/sub/z.txt', 'z\n');
      await f.upDir('d', 0o755, true);
      await f.upFile('d/keep.txt', 'keep\n');
      await f.upFile('d/new.txt', 'new\n');
      await f.upDir('d/sub');
    },
    changes: ['deleted file d/gone.txt', 'added file d/new.txt', 'deleted file d/sub/z.txt'],
  },
  {
    name: 'paths with spaces, quotes, tabs and non-UTF-8 bytes',
    async setup(f) {
      await base(f);
      await f.lowerFile('dir with space/old name.txt', 'old\n');
      await f.upFile('dir with space/old name.txt', 'new\n');
      await f.upFile(NON_UTF8, 'bytes\n');
      await f.upFile('quo"te\\back.txt', 'q\n');
      await f.upFile('tab\there', 't\n');
      await f.upFile('ünïcode.md', 'u\n');
    },
    changes: [`added file ${NON_UTF8.toString('utf8')}`, 'modified file dir with space/old name.txt', 'added file quo"te\\back.txt', 'added file tab\there', 'added file ünïcode.md'],
  },
  {
    name: 'gitignored node_modules and nested .gitignore',
    async setup(f) {
      await base(f);
      await f.lowerFile('.gitignore', 'node_modules/\n*.o\n');
      await f.lowerFile('sub/.gitignore', '*.log\n!keep.log\n');
      await f.upFile('node_modules/left-pad/index.js', 'module.exports = 1;\n');
      await f.upFile('node_modules/left-pad/package.json', '{}\n');
      await f.upFile('src/main.o', Buffer.from([0, 1]));
      await f.upFile('sub/debug.log', 'noise\n');
      await f.upFile('sub/keep.log', 'kept\n');
      await f.upFile('src/main.c', 'int main(void) {\n  return 2;\n}\n');
    },
    changes: ['modified file src/main.c', 'added file sub/keep.log'],
    changesWithIgnored: [
      'added directory node_modules',
      'added directory node_modules/left-pad',
      'added file node_modules/left-pad/index.js',
      'added file node_modules/left-pad/package.json',
      'modified file src/main.c',
      'added file src/main.o',
      'added file sub/debug.log',
      'added file sub/keep.log',
    ],
  },
];
