/** Which packs' warm-up leaves their command started and waiting for the run (core/warmup.ts). */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { BackendSandbox } from '../../src/core/backend.js';
import { KilnError } from '../../src/core/errors.js';
import type { PackInfo } from '../../src/core/packs.js';
import { prestartable, warmUp } from '../../src/core/warmup.js';

const python: PackInfo = {
  name: 'python',
  description: '',
  env: { PATH: '/usr/bin' },
  run: { fileName: 'main.py', command: ['python3', '{file}'], projectCommand: ['python3', '{entrypoint}'] },
  imageReady: true,
};

/** A sandbox whose agent records its calls; prestart answers as `prestart` says. */
function fakeSandbox(prestart: () => Promise<{ pid: number }>) {
  const calls: string[] = [];
  let destroyed = false;
  const agent = {
    closed: false,
    prestart: (req: { argv: string[]; file: string; cwd?: string }) => {
      calls.push(`prestart ${req.argv.join(' ')} ${req.file} in ${req.cwd}`);
      return prestart();
    },
    writeFile: async (path: string) => {
      calls.push(`write ${path}`);
      return { bytes: 0 };
    },
    exec: (req: { argv: string[] }) => {
      calls.push(`exec ${req.argv.join(' ')}`);
      return { result: Promise.resolve({ exitCode: 0, timedOut: false }) };
    },
  };
  const sb = { id: 'sb', details: {}, agent, onExit: () => undefined, usage: async () => ({}), destroy: async () => void (destroyed = true) } as unknown as BackendSandbox;
  return { sb, calls, destroyed: () => destroyed };
}

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
  it('warms a python pool member by starting the snippet command ahead of its run', async () => {
    const f = fakeSandbox(async () => ({ pid: 7 }));
    await warmUp(f.sb, python);
    assert.deepEqual(f.calls, ['prestart python3 main.py /workspace/main.py in /workspace']);
  });
  it('falls back to running an empty file when the agent cannot prestart (an older agent in a VM image)', async () => {
    const f = fakeSandbox(async () => {
      throw new KilnError('INVALID_REQUEST', 'unknown op "prestart"');
    });
    await warmUp(f.sb, python);
    assert.deepEqual(f.calls, ['prestart python3 main.py /workspace/main.py in /workspace', 'write /workspace/main.py', 'exec python3 /workspace/main.py', 'exec rm -f /workspace/main.py']);
    assert.equal(f.destroyed(), false);
  });
});
