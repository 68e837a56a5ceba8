/**
 * Pause and snapshot of a Firecracker VM against the fake (requests checked against
 * firecracker-api.yaml): PATCH /vm Paused, PUT /snapshot/create into files other than the
 * template's links, the files moved into the core's folder; a restore is a fresh process that
 * loads them (File backend, resume) and syncs in the hello.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fixture, READY } from './helpers.js';

test('pause = pause + full snapshot to its own files, then a stop; restore = load of those files + sync', async () => {
  const f = await fixture();
  const out = await mkdtemp(join(tmpdir(), 'kfc-save-'));
  try {
    const sb = await f.backend.create(f.spec('sb-p'), READY);
    assert.ok(sb.saveMachine, 'a VM without a NIC can be saved');
    const { machine } = await sb.saveMachine(join(out, 'machine'), { keepRunning: false });
    const vm = f.launcher.instances[1]!; // [0] is the template
    assert.deepEqual(
      vm.requests.filter((r) => r.status >= 400),
      [],
    );
    const calls = vm.requests.map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(calls.slice(-2), ['PATCH /vm', 'PUT /snapshot/create']);
    assert.deepEqual(vm.requests.at(-1)!.body, { snapshot_type: 'Full', snapshot_path: 'snapshot/saved-vmstate', mem_file_path: 'snapshot/saved-memory' });
    assert.deepEqual((await readdir(join(out, 'machine'))).sort(), ['memory', 'vmstate']);
    await sb.destroy();
    assert.equal(vm.alive(), false);
    // The template's own files are untouched (a clone's links point at them).
    const tpl = f.launcher.instances[0]!.requests.find((r) => r.path === '/snapshot/create')!;
    assert.equal((tpl.body as { snapshot_path: string }).snapshot_path, 'snapshot/vmstate');

    const back = await f.backend.restoreMachine(f.spec('sb-p'), join(out, 'machine'), machine, READY);
    const restored = f.launcher.instances.at(-1)!;
    assert.deepEqual(
      restored.requests.map((r) => `${r.method} ${r.path}`).filter((r) => r !== 'GET /'),
      ['PUT /logger', 'PUT /snapshot/load'],
    );
    assert.deepEqual(restored.requests.find((r) => r.path === '/snapshot/load')!.body, {
      snapshot_path: 'snapshot/vmstate',
      mem_backend: { backend_type: 'File', backend_path: 'snapshot/memory' },
      resume_vm: true,
    });
    assert.equal(restored.agentLog.syncs[0]!.onHello, true, 'entropy and clock come with the hello');
    assert.equal(back.details.restoredFromState, true);
    assert.equal((await back.agent.ping()).rttMs >= 0, true);

    // A snapshot keeps the VM running: paused, saved, resumed.
    await back.saveMachine!(join(out, 'snap'), { keepRunning: true });
    assert.deepEqual(
      restored.requests
        .map((r) => `${r.method} ${r.path} ${JSON.stringify(r.body ?? '')}`)
        .slice(-3)
        .map((c) => c.replace(/ \{.*$/, (b) => (b.includes('state') && !b.includes('snapshot') ? b : ''))),
      ['PATCH /vm {"state":"Paused"}', 'PUT /snapshot/create', 'PATCH /vm {"state":"Resumed"}'],
    );
    assert.equal(restored.alive(), true);
    await back.destroy();
    // A changed pack cannot restore the saved state.
    await assert.rejects(f.backend.restoreMachine({ ...f.spec('sb-q'), pack: { ...f.spec('sb-q').pack, hash: 'otherhash' } }, join(out, 'snap'), machine, READY), /changed since the state was saved/);
  } finally {
    await f.close();
    await rm(out, { recursive: true, force: true });
  }
  assert.equal(existsSync(f.root), false);
});
