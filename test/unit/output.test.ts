/** Output encoding on stream paths, output cap settings, and how /v1/run names a snippet's file. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import type { KilnError } from '../../src/core/errors.js';
import { snippetFileName } from '../../src/core/oneshot.js';
import { decodeInput, outputEvents } from '../../src/server/routes/encoding.js';

describe('outputEvents', () => {
  const run = (encoding: 'utf8' | 'base64', feed: (h: ReturnType<typeof outputEvents>) => void): Array<Record<string, unknown>> => {
    const events: Array<Record<string, unknown>> = [];
    const out = outputEvents(encoding, (e) => {
      events.push(e);
      return undefined;
    });
    feed(out);
    out.flush();
    return events;
  };

  it('sends a character split across chunks once, whole', () => {
    const bytes = Buffer.from('a日本');
    const events = run('utf8', (o) => {
      for (const b of bytes) void o.handlers.onStdout(Buffer.from([b]));
    });
    assert.deepEqual(
      events.map((e) => e.data),
      ['a', '日', '本'],
    );
    assert.ok(events.every((e) => e.type === 'stdout' && e.encoding === 'utf8'));
  });

  it('keeps stdout and stderr decoders apart', () => {
    const [a, b] = [Buffer.from('日'), Buffer.from('本')];
    const events = run('utf8', (o) => {
      void o.handlers.onStdout(a.subarray(0, 2));
      void o.handlers.onStderr(b.subarray(0, 1));
      void o.handlers.onStdout(a.subarray(2));
      void o.handlers.onStderr(b.subarray(1));
    });
    assert.deepEqual(
      events.map((e) => [e.type, e.data]),
      [
        ['stdout', '日'],
        ['stderr', '本'],
      ],
    );
  });

  it('flushes an unfinished character as U+FFFD before a truncated event and at the end', () => {
    const events = run('utf8', (o) => {
      void o.handlers.onStdout(Buffer.from([0x61, 0xe6]));
      o.handlers.onTruncated('stdout', 10);
      void o.handlers.onStdout(Buffer.from([0x62, 0xe6, 0x97]));
    });
    assert.deepEqual(events, [
      { type: 'stdout', data: 'a', encoding: 'utf8' },
      { type: 'stdout', data: '\uFFFD', encoding: 'utf8' },
      { type: 'truncated', stream: 'stdout', droppedBytes: 10 },
      { type: 'stdout', data: 'b', encoding: 'utf8' },
      { type: 'stdout', data: '\uFFFD', encoding: 'utf8' },
    ]);
  });

  it('sends base64 chunks that decode to the exact bytes', () => {
    const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const events = run('base64', (o) => {
      void o.handlers.onStdout(all.subarray(0, 100));
      void o.handlers.onStdout(all.subarray(100));
    });
    assert.ok(Buffer.concat(events.map((e) => Buffer.from(e.data as string, 'base64'))).equals(all));
  });
});

describe('decodeInput', () => {
  it('passes text through and decodes strict base64 to the bytes', () => {
    assert.equal(decodeInput('stdin', 'héllo'), 'héllo');
    assert.deepEqual(decodeInput('stdin', 'AP8Kgw==', 'base64'), Buffer.from([0, 255, 10, 131]));
    assert.deepEqual(decodeInput('stdin', '', 'base64'), Buffer.alloc(0));
    assert.deepEqual(decodeInput('stdin', 'AP8K\ngw==\n', 'base64'), Buffer.from([0, 255, 10, 131]), 'as base64(1) wraps it');
  });

  it('refuses what Buffer.from would half-read, naming the field', () => {
    for (const bad of ['not base64!', 'AP8', 'AP8Kgw=', 'AP8K-w==', '=AAA']) {
      assert.throws(
        () => decodeInput('stdin', bad, 'base64'),
        (e: KilnError) => e.code === 'INVALID_REQUEST' && /"stdin" is not valid base64/.test(e.message),
        bad,
      );
    }
  });
});

describe('output cap settings', () => {
  it('defaults to 1 MiB per stream, up to 16 MiB on request', () => {
    const { limits } = loadConfig({});
    assert.deepEqual([limits.defaultOutputBytes, limits.maxOutputBytes], [1 << 20, 16 << 20]);
  });

  it('lowers the default to a lower maximum, and refuses a default set above the maximum', () => {
    assert.equal(loadConfig({ KILN_MAX_OUTPUT_BYTES: '4096' }).limits.defaultOutputBytes, 4096);
    assert.throws(() => loadConfig({ KILN_MAX_OUTPUT_BYTES: '4096', KILN_DEFAULT_OUTPUT_BYTES: '8192' }), /KILN_DEFAULT_OUTPUT_BYTES=8192 is above KILN_MAX_OUTPUT_BYTES=4096/);
  });
});

describe('snippetFileName', () => {
  const cases: Array<[string, string]> = [
    ["import fs from 'node:fs';", 'main.mjs'],
    ["import { readFile } from 'node:fs/promises'", 'main.mjs'],
    ["import * as path from 'node:path'", 'main.mjs'],
    ["import './setup.js'", 'main.mjs'],
    ['const x = 1;\nexport default x;', 'main.mjs'],
    ['export const answer = 42;', 'main.mjs'],
    ['export { a, b };', 'main.mjs'],
    ["const fs = require('fs');", 'main.js'],
    ["const m = await import('node:fs');", 'main.js'],
    ["// import x from 'y'\nconsole.log(1)", 'main.js'],
    ['const important = 1; exported(important);', 'main.js'],
    ['importantThing();\nexporter.run();', 'main.js'],
    ["import{ x } from './x.mjs'", 'main.mjs'],
  ];
  for (const [code, want] of cases) {
    it(`${JSON.stringify(code)} → ${want}`, () => assert.equal(snippetFileName('main.js', code), want));
  }

  it("leaves other packs' file names alone", () => {
    assert.equal(snippetFileName('main.py', 'import os'), 'main.py');
  });
});
