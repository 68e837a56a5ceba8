import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CleanupStack } from '../../src/core/cleanup.js';
import { loadConfig } from '../../src/core/config.js';

describe('cleanup stack', () => {
  it('runs undos once, in reverse, and keeps every error', async () => {
    const s = new CleanupStack();
    const order: string[] = [];
    s.push('a', () => {
      order.push('a');
    });
    s.push('b', () => {
      order.push('b');
      throw new Error('b broke');
    });
    s.push('c', async () => {
      order.push('c');
      throw new Error('c broke');
    });
    await assert.rejects(s.run(), (e: AggregateError) => e.errors.length === 2);
    await assert.rejects(s.run());
    assert.deepEqual(order, ['c', 'b', 'a']);
  });
});

describe('config', () => {
  it('defaults to loopback 8400 without a token', () => {
    const c = loadConfig({});
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.port, 8400);
  });
  it('refuses a non-loopback address without KILN_TOKEN', () => {
    assert.throws(() => loadConfig({ KILN_HOST: '0.0.0.0' }), /KILN_TOKEN/);
    assert.equal(loadConfig({ KILN_HOST: '0.0.0.0', KILN_TOKEN: 't' }).token, 't');
  });
  it('rejects bad numbers and pool specs with a message naming the variable', () => {
    assert.throws(() => loadConfig({ KILN_PORT: 'abc' }), /KILN_PORT/);
    assert.throws(() => loadConfig({ KILN_POOL: 'python' }), /KILN_POOL/);
    assert.deepEqual(loadConfig({ KILN_POOL: 'python=2, node=1' }).poolTargets, [
      { backend: undefined, pack: 'python', target: 2 },
      { backend: undefined, pack: 'node', target: 1 },
    ]);
    assert.deepEqual(loadConfig({ KILN_POOL: 'python=2,qemu/python=1,python=3' }).poolTargets, [
      { backend: undefined, pack: 'python', target: 3 },
      { backend: 'qemu', pack: 'python', target: 1 },
    ]);
    for (const bad of ['python=-1', 'python=1001', '/python=1', 'qemu/=1']) assert.throws(() => loadConfig({ KILN_POOL: bad }), /KILN_POOL entry/, bad);
  });
});
