/**
 * Usage and OOM attribution of Firecracker sandboxes, through the core's exec path: an exec is
 * `oomKilled` exactly when the guest kernel's OOM killer ended it, as on QEMU (core/vm-usage.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../../src/core/config.js';
import { ExecRunner } from '../../src/core/exec.js';
import { Sandbox } from '../../src/core/sandbox.js';
import { FAKE_OOM, FAKE_SIGKILL } from './fake-agent.js';
import { fixture, READY } from './helpers.js';

test('an exec the guest OOM killer ended is oomKilled; another SIGKILL and a clean exit are not', async () => {
  const f = await fixture({ backend: { snapshots: false } });
  try {
    const inner = await f.backend.create(f.spec('sb-oom'), READY);
    const sb = new Sandbox('sb-oom', 'firecracker', 'python', {}, {}, { cpus: 1, memoryMib: 256, diskMib: 128 }, inner, 1, false, 60);
    const runner = new ExecRunner(loadConfig({}).limits);
    const ok = await runner.run(sb, { cmd: ['true'] });
    assert.deepEqual([ok.signal, ok.oomKilled], [null, false]);
    const oom = await runner.run(sb, { cmd: [FAKE_OOM] });
    assert.deepEqual([oom.signal, oom.oomKilled], ['SIGKILL', true], 'the guest counted an OOM kill');
    const killed = await runner.run(sb, { cmd: [FAKE_SIGKILL] });
    assert.deepEqual([killed.signal, killed.oomKilled], ['SIGKILL', false], 'a SIGKILL the OOM killer did not send');
    assert.equal((await inner.usage()).oomKills, 1);
    await inner.destroy();
  } finally {
    await f.close();
  }
});
