import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mmdebstrapArgs } from '../../src/images/mmdebstrap.js';
import { MmdebstrapProgress, parseSquashProgress } from '../../src/images/progress.js';

test('mmdebstrap output becomes phases with percentages', () => {
  const p = new MmdebstrapProgress('shell');
  const lines = [
    'I: running apt-get update...',
    'Get:5 http://deb.debian.org/debian bookworm/main amd64 Packages [8790 kB]',
    'I: downloading packages with apt...',
    '0 upgraded, 2 newly installed, 0 to remove and 0 not upgraded.',
    'Get:1 http://deb.debian.org/debian bookworm/main amd64 bash amd64 5.2.15-2+b13 [1491 kB]',
    'Get:2 http://deb.debian.org/debian bookworm/main amd64 tar amd64 1.34 [900 kB]',
    'I: installing essential packages...',
    'Unpacking bash (5.2.15-2+b13) ...',
    'Setting up bash (5.2.15-2+b13) ...',
    'some noise',
    'E: Unable to locate package nosuch',
  ];
  const events = lines.map((l) => p.feed(l));
  assert.equal(events[0]?.phase, 'resolve');
  assert.equal(events[1]?.message, 'fetching index http://deb.debian.org/debian bookworm/main');
  assert.deepEqual(events[4], { pack: 'shell', phase: 'download', message: 'downloading bash 5.2.15-2+b13 (1491 kB)', percent: 50 });
  assert.equal(events[5]?.percent, 100);
  assert.equal(events[7]?.phase, 'unpack');
  assert.deepEqual([events[8]?.phase, events[8]?.percent], ['configure', 50]);
  assert.equal(events[9], undefined);
  assert.equal(events[10]?.message, 'E: Unable to locate package nosuch');
});

test('mksquashfs progress bar is parsed', () => {
  assert.deepEqual(parseSquashProgress('go', '[=======/      ] 120/480  25%'), { pack: 'go', phase: 'squash', message: 'compressing 120/480 blocks', percent: 25 });
  assert.equal(parseSquashProgress('go', 'Parallel mksquashfs: Using 2 processors'), undefined);
});

test('mmdebstrap arguments include base packages, excludes and the quoted cache dir', () => {
  const args = mmdebstrapArgs({
    spec: { suite: 'bookworm', variant: 'essential', packages: ['bash'], mirrors: [] },
    rootDir: '/d/root',
    aptCacheDir: "/d/it's cache",
  });
  assert.ok(args.includes('--include=bash,coreutils,gzip,procps,tar'));
  assert.ok(args.includes('--dpkgopt=path-exclude=/usr/share/doc/*'));
  assert.ok(args.includes('--mode=root'));
  assert.ok(args.some((a) => a.startsWith('--setup-hook=') && a.includes(`'/d/it'\\''s cache'/.`)));
  assert.deepEqual(args.slice(-2), ['bookworm', '/d/root']);
});
