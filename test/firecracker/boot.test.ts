/**
 * The real boot steps, snapshot template creation and clone restore, driven against a fake
 * Firecracker that validates every request against firecracker-api.yaml and enforces ordering.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { KilnError } from '../../src/core/errors.js';
import { FAKE_EXEC_LEFTOVER } from './fake-agent.js';
import { fixture, READY } from './helpers.js';

const COLD_BOOT_REQUESTS = ['GET /', 'PUT /logger', 'PUT /machine-config', 'PUT /boot-source', 'PUT /drives/rootfs', 'PUT /vsock', 'PUT /entropy', 'PUT /actions'];

test('cold boot: every request is valid per the spec, in order, and the agent answers', async () => {
  const f = await fixture({ backend: { snapshots: false } });
  try {
    const sb = await f.backend.create(f.spec('sb-cold'), READY);
    const fake = f.launcher.instances[0]!;
    assert.deepEqual(
      fake.requests.filter((r) => r.status >= 400),
      [],
      'no request was rejected',
    );
    assert.deepEqual(
      fake.requests.map((r) => `${r.method} ${r.path}`).filter((r, i, a) => r !== 'GET /' || a.indexOf(r) === i),
      COLD_BOOT_REQUESTS,
    );
    const body = (p: string): Record<string, unknown> => fake.requests.find((r) => r.path === p)!.body as Record<string, unknown>;
    assert.deepEqual(body('/machine-config'), { vcpu_count: 1, mem_size_mib: 256, smt: false, track_dirty_pages: false });
    assert.deepEqual(body('/drives/rootfs'), { drive_id: 'rootfs', is_root_device: false, is_read_only: true, path_on_host: 'rootfs.img' });
    assert.deepEqual(body('/vsock'), { guest_cid: 3, uds_path: 'run/v.sock' });
    assert.deepEqual(body('/actions'), { action_type: 'InstanceStart' });
    const args = body('/boot-source').boot_args as string;
    assert.match(args, /^console=ttyS0 .*kiln\.disk_mib=128 .*reboot=k panic=1 pci=off .* -- --init$/);
    assert.doesNotMatch(args, /acpi=off|reboot=t|panic=-1/);
    assert.deepEqual(fake.agentLog.ops, ['hello'], 'a cold boot does not need sync');
    assert.ok((await sb.agent.ping()).rttMs >= 0);
    assert.equal(typeof sb.details.bootMs, 'number');
    assert.deepEqual(
      Object.keys(sb.details.steps as object),
      [
        'fc.makeVmDir',
        'fc.linkImages',
        'fc.spawn',
        'fc.waitApiSocket',
        'fc.putLogger',
        'fc.putMachineConfig',
        'fc.putBootSource',
        'fc.putDrive(rootfs)',
        'fc.putVsock',
        'fc.putEntropy',
        'fc.instanceStart',
        'kiln.agentHandshake',
      ],
      "each step's end, in boot order",
    );

    await sb.destroy();
    assert.equal(fake.requests.at(-1)!.body && (fake.requests.at(-1)!.body as { action_type?: string }).action_type, 'SendCtrlAltDel', 'graceful shutdown first');
    assert.equal(fake.alive(), false);
    assert.equal(existsSync(join(f.runDir, 'firecracker/vms/sb-cold')), false, 'VM directory removed');
    await sb.destroy(); // idempotent
  } finally {
    await f.close();
  }
});

test('shutdown ladder: a guest ignoring Ctrl+Alt+Del is SIGKILLed after the grace period', async () => {
  const f = await fixture({ backend: { snapshots: false, shutdownGraceMs: 150 }, fake: { ignoreCtrlAltDel: true } });
  try {
    const sb = await f.backend.create(f.spec('sb-stubborn'), READY);
    const t0 = Date.now();
    await sb.destroy();
    assert.equal(await f.launcher.instances[0]!.exited, 'killed by SIGKILL');
    assert.ok(Date.now() - t0 >= 140, 'waited for the grace period first');
  } finally {
    await f.close();
  }
});

const FAILING_STEPS: Array<[string, string]> = [
  ['PUT /logger', 'fc.putLogger'],
  ['PUT /machine-config', 'fc.putMachineConfig'],
  ['PUT /boot-source', 'fc.putBootSource'],
  ['PUT /drives/rootfs', 'fc.putDrive(rootfs)'],
  ['PUT /vsock', 'fc.putVsock'],
  ['PUT /entropy', 'fc.putEntropy'],
  ['PUT /actions', 'fc.instanceStart'],
];

for (const [request, step] of FAILING_STEPS) {
  test(`a 400 on ${request} unwinds every earlier step in reverse and names ${step}`, async () => {
    const f = await fixture({ backend: { snapshots: false }, fake: { failOn: { request, message: `fake refusal of ${request}` } } });
    try {
      const err = await f.backend.create(f.spec('sb-fail'), READY).then(
        () => undefined,
        (e: unknown) => e,
      );
      assert.ok(err instanceof KilnError, 'a KilnError');
      assert.equal(err.code, 'BOOT_FAILED');
      const call = step.replace(/\(.*\)$/, '');
      assert.ok(err.message.startsWith(`microVM boot step ${step} failed: Firecracker API call ${call} failed (HTTP 400): fake refusal of ${request}`), err.message);
      assert.equal(err.details?.step, step);
      assert.match(err.message, /console lines:\nRunning Firecracker/, 'console tail attached');

      const done = f.trace.filter((e) => e.startsWith('done:')).map((e) => e.slice(5));
      const undone = f.trace.filter((e) => e.startsWith('undo:')).map((e) => e.slice(5));
      assert.deepEqual(undone, [...done].reverse(), 'every completed step undone, in reverse');
      assert.equal(done.at(-1) !== step && f.trace.includes(`fail:${step}`), true);
      assert.ok(done.includes('fc.spawn') && undone.includes('fc.makeVmDir'));
      assert.equal(f.launcher.instances[0]!.alive(), false, 'process killed');
      assert.equal(existsSync(join(f.runDir, 'firecracker/vms/sb-fail')), false, 'directory removed');
    } finally {
      await f.close();
    }
  });
}

test('snapshots: template = boot + pause + full snapshot; clone = fresh process + load (File, resume) + sync in the hello', async () => {
  const f = await fixture();
  try {
    const sb = await f.backend.create(f.spec('sb-a'), READY);
    const [tpl, clone] = f.launcher.instances;
    assert.ok(tpl && clone, 'one template VM and one clone');
    assert.deepEqual(
      tpl.requests.filter((r) => r.status >= 400),
      [],
    );
    const tplCalls = tpl.requests.map((r) => `${r.method} ${r.path}`);
    assert.deepEqual(tplCalls.slice(-2), ['PATCH /vm', 'PUT /snapshot/create'], 'paused, then snapshotted; a paused VM is killed, not sent Ctrl+Alt+Del');
    const create = tpl.requests.find((r) => r.path === '/snapshot/create')!;
    assert.deepEqual(create.body, { snapshot_type: 'Full', snapshot_path: 'snapshot/vmstate', mem_file_path: 'snapshot/memory' });
    assert.deepEqual(tpl.requests.find((r) => r.path === '/vm')!.body, { state: 'Paused' });
    assert.equal(tpl.alive(), false, 'the template VM is gone once its snapshot exists');

    assert.deepEqual(
      clone.requests.filter((r) => r.status >= 400),
      [],
    );
    assert.deepEqual(
      clone.requests.map((r) => `${r.method} ${r.path}`).filter((r) => r !== 'GET /'),
      ['PUT /logger', 'PUT /snapshot/load'],
    );
    assert.deepEqual(clone.requests.find((r) => r.path === '/snapshot/load')!.body, {
      snapshot_path: 'snapshot/vmstate',
      mem_backend: { backend_type: 'File', backend_path: 'snapshot/memory' },
      resume_vm: true,
    });
    assert.deepEqual(clone.agentLog.ops, ['hello'], 'the sync rides on the handshake: nothing runs before it');
    assert.equal(clone.agentLog.syncs[0]!.onHello, true);
    assert.equal(clone.agentLog.syncs[0]!.entropyBytes, 64);
    assert.ok(Math.abs(clone.agentLog.syncs[0]!.wallClockMs - Date.now()) < 5_000);
    assert.equal(sb.details.cloneOf !== undefined && typeof sb.details.restoreMs === 'number', true);

    // Same pack/vcpus/memory/kernel: the template is reused, only a clone starts.
    const sb2 = await f.backend.create(f.spec('sb-b'), READY);
    assert.equal(f.launcher.instances.length, 3);
    assert.equal(sb2.details.cloneOf, sb.details.cloneOf);
    // Different memory: a new template.
    const sb3 = await f.backend.create({ ...f.spec('sb-c'), memoryMib: 512 }, READY);
    assert.equal(f.launcher.instances.length, 5);
    assert.notEqual(sb3.details.cloneOf, sb.details.cloneOf);
    await Promise.all([sb.destroy(), sb2.destroy(), sb3.destroy()]);
  } finally {
    await f.close();
  }
});

test('a template with a pack command warms up before its snapshot and leaves /tmp and /workspace as found', async () => {
  const f = await fixture();
  try {
    const base = f.spec('sb-warm');
    const spec = { ...base, pack: { ...base.pack, env: { HOME: '/workspace' }, run: { fileName: 'main.py', command: ['python3', '{file}'] } } };
    await f.backend.create(spec, READY);
    const [tpl, clone] = f.launcher.instances;
    assert.deepEqual(tpl!.agentLog.ops, ['hello', 'fs.list', 'fs.list', 'file.write', 'exec', 'fs.list', 'fs.list', 'exec']);
    assert.deepEqual(tpl!.agentLog.execs, [
      ['python3', '/tmp/.kiln-warmup/main.py'],
      ['rm', '-rf', '--', '/tmp/.kiln-warmup', FAKE_EXEC_LEFTOVER],
    ]);
    assert.deepEqual(
      [...tpl!.agentLog.files!.values()].map((names) => [...names]),
      [[], []],
      'nothing the warm-up made is in the snapshot',
    );
    assert.deepEqual(tpl!.requests.map((r) => `${r.method} ${r.path}`).slice(-2), ['PATCH /vm', 'PUT /snapshot/create'], 'the snapshot follows the warm-up');
    assert.deepEqual(clone!.agentLog.ops, ['hello'], 'clones run nothing before their handshake');
    // A pack without a run command gets another template (the warm-up is part of the key).
    await f.backend.create(f.spec('sb-plain'), READY);
    assert.equal(f.launcher.instances.length, 4);
  } finally {
    await f.close();
  }
});

test('close() aborts a create under way, waits for a destroy under way, and refuses new creates', async () => {
  const f = await fixture({ backend: { snapshots: false } });
  try {
    const leaving = await f.backend.create(f.spec('sb-leaving'), READY);
    const creating = f.backend.create(f.spec('sb-closing'), READY);
    creating.catch(() => undefined);
    const destroying = leaving.destroy();
    await f.backend.close();
    await destroying;
    const outcome = await creating.then(
      () => 'created',
      (e: KilnError) => e.code,
    );
    assert.ok(['SHUTTING_DOWN', 'TIMEOUT', 'BOOT_FAILED'].includes(outcome), outcome);
    assert.deepEqual(f.launcher.instances.filter((i) => i.alive()).length, 0, 'no Firecracker process outlives close()');
    await assert.rejects(f.backend.create(f.spec('sb-after'), READY), { code: 'SHUTTING_DOWN' });
  } finally {
    await f.close();
  }
});

test('snapshot failures unwind the template VM and leave no template behind', async () => {
  const f = await fixture({ fake: { failOn: { request: 'PUT /snapshot/create', message: 'disk full (fake)' } } });
  try {
    const err = (await f.backend.create(f.spec('sb-x'), READY).then(
      () => undefined,
      (e: unknown) => e,
    )) as KilnError;
    assert.match(err.message, /fc\.createSnapshot failed \(HTTP 400\): disk full \(fake\)/);
    assert.equal(f.launcher.instances[0]!.alive(), false);
    const report = await f.backend.scan();
    assert.deepEqual(
      report.removed.filter((l) => /template/.test(l)),
      [],
      'no half-built template left to clean',
    );
  } finally {
    await f.close();
  }
});

test('sandboxes with a TAP device cold-boot with a validated NIC and rate limiters', async () => {
  const f = await fixture();
  try {
    const sb = await f.backend.create(
      f.spec('sb-net', {
        driveRateLimit: { bandwidth: { size: 10_485_760, refillTimeMs: 1000 }, ops: { size: 500, refillTimeMs: 1000, oneTimeBurst: 100 } },
        network: { tapDevice: 'kilntap0', guestMac: '06:00:ac:10:00:02', rxRateLimit: { bandwidth: { size: 1_000_000, refillTimeMs: 100 } } },
      }),
      READY,
    );
    const fake = f.launcher.instances[0]!;
    assert.equal(f.launcher.instances.length, 1, 'no template for a NIC sandbox');
    assert.deepEqual(
      fake.requests.filter((r) => r.status >= 400),
      [],
    );
    assert.deepEqual(fake.requests.find((r) => r.path === '/drives/rootfs')!.body, {
      drive_id: 'rootfs',
      is_root_device: false,
      is_read_only: true,
      path_on_host: 'rootfs.img',
      rate_limiter: { bandwidth: { size: 10_485_760, refill_time: 1000 }, ops: { size: 500, refill_time: 1000, one_time_burst: 100 } },
    });
    assert.deepEqual(fake.requests.find((r) => r.path === '/network-interfaces/eth0')!.body, {
      iface_id: 'eth0',
      host_dev_name: 'kilntap0',
      guest_mac: '06:00:ac:10:00:02',
      rx_rate_limiter: { bandwidth: { size: 1_000_000, refill_time: 100 } },
    });
    await sb.destroy();
  } finally {
    await f.close();
  }
});

test('invalid backendOptions are rejected before anything starts', async () => {
  const f = await fixture();
  try {
    const err = (await f.backend.create(f.spec('sb-bad', { driveRateLimit: { bandwidth: { size: -1, refillTimeMs: 1 } }, turbo: true }), READY).then(
      () => undefined,
      (e: unknown) => e,
    )) as KilnError;
    assert.equal(err.code, 'INVALID_REQUEST');
    assert.match(err.message, /turbo/);
    assert.match(err.message, /size must be >= 1/);
    assert.equal(f.launcher.instances.length, 0);
  } finally {
    await f.close();
  }
});
