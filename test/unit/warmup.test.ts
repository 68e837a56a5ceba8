/** Which packs' warm-up leaves their command started and waiting for the run (core/warmup.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { prestartable } from '../../src/core/warmup.js';

describe('prestartable', () => {
  it('is CPython run on the file alone', () => {
    for (const c of [
      ['python3', '{file}'],
      ['python', '{file}'],
      ['/usr/bin/python3.11', '{file}'],
    ])
      assert.equal(prestartable(c), true, c.join(' '));
  });
  it('is nothing else: other programs, flags, compilers, extra arguments', () => {
    for (const c of [
      ['node', '{file}'],
      ['bash', '{file}'],
      ['go', 'run', '{file}'],
      ['python3', '-u', '{file}'],
      ['python3', '{file}', 'x'],
      ['pythonista', '{file}'],
      ['ipython3', '{file}'],
    ])
      assert.equal(prestartable(c), false, c.join(' '));
  });
});
