/** The REST driver against the spec-validating fake: ordering rules and Firecracker-style errors. */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FirecrackerApi, FirecrackerApiError } from '../../src/backends/firecracker/api-client.js';
import { FakeFirecracker, spec } from './fake-firecracker.js';

async function started(): Promise<{ dir: string; fake: FakeFirecracker; api: FirecrackerApi; done(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-api-'));
  for (const f of ['vmlinux', 'rootfs.img']) await writeFile(join(dir, f), 'x');
  await mkdir(join(dir, 'run'));
  const fake = new FakeFirecracker(join(dir, 'api.sock'), dir);
  await fake.listen();
  return {
    dir,
    fake,
    api: new FirecrackerApi({ socketPath: join(dir, 'api.sock') }),
    done: async () => {
      fake.exit('done');
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function rejects(p: Promise<unknown>, call: string, fault: RegExp): Promise<void> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  assert.ok(e instanceof FirecrackerApiError, `expected a FirecrackerApiError, got ${String(e)}`);
  assert.equal(e.call, call);
  assert.equal(e.statusCode, 400);
  assert.match(e.faultMessage, fault);
  assert.ok(e.message.startsWith(`Firecracker API call ${call} failed (HTTP 400): `));
}

test('the spec loads: every endpoint the driver uses exists in firecracker-api.yaml', () => {
  const ops = spec()
    .operations()
    .map((o) => `${o.method} ${o.path}`);
  for (const needed of [
    'PUT /logger',
    'PUT /machine-config',
    'GET /machine-config',
    'PUT /boot-source',
    'PUT /drives/{drive_id}',
    'PUT /vsock',
    'PUT /entropy',
    'PUT /network-interfaces/{iface_id}',
    'PUT /actions',
    'PATCH /vm',
    'PUT /snapshot/create',
    'PUT /snapshot/load',
    'GET /',
    'GET /version',
  ]) {
    assert.ok(ops.includes(needed), needed);
  }
  assert.match(spec().version, /^1\.\d+/);
});

test('the validator is strict: missing required fields, wrong types, unknown fields, unknown paths', () => {
  const s = spec();
  assert.equal(s.check('PUT', '/machine-config', JSON.stringify({ vcpu_count: 1, mem_size_mib: 128 })).ok, true);
  assert.match(s.check('PUT', '/machine-config', JSON.stringify({ vcpu_count: 1 })).problem!, /mem_size_mib/);
  assert.match(s.check('PUT', '/machine-config', JSON.stringify({ vcpu_count: 0, mem_size_mib: 128 })).problem!, />= 1/);
  assert.match(s.check('PUT', '/drives/x', JSON.stringify({ drive_id: 'x', is_root_device: 'no' })).problem!, /is_root_device must be boolean/);
  assert.match(s.check('PUT', '/vsock', JSON.stringify({ guest_cid: 3, uds_path: 'v', cid: 3 })).problem!, /additional properties "cid"/);
  assert.match(s.check('PUT', '/actions', JSON.stringify({ action_type: 'Reboot' })).problem!, /allowed values/);
  assert.match(s.check('PUT', '/snapshot/load', JSON.stringify({ mem_backend: { backend_type: 'File', backend_path: 'm' } })).problem!, /snapshot_path/);
  assert.match(s.check('DELETE', '/vm', '').problem!, /DELETE is not defined/);
  assert.match(s.check('PUT', '/nope', '{}').problem!, /no path/);
  assert.match(s.check('PUT', '/logger', '').problem!, /requires a body/);
});

test('describeInstance / getMachineConfig parse Firecracker answers', async () => {
  const t = await started();
  try {
    assert.equal((await t.api.describeInstance()).state, 'Not started');
    assert.deepEqual(await t.api.getMachineConfig(), { vcpu_count: 1, mem_size_mib: 128, smt: false });
    await t.api.putMachineConfig({ vcpu_count: 2, mem_size_mib: 512 });
    assert.equal((await t.api.getMachineConfig()).vcpu_count, 2);
  } finally {
    await t.done();
  }
});

test('ordering: pre-boot calls after InstanceStart, snapshot create unless Paused, load on a configured process', async () => {
  const t = await started();
  try {
    await rejects(t.api.instanceStart(), 'fc.instanceStart', /without kernel configuration/);
    await rejects(t.api.pauseVm(), 'fc.pauseVm', /not running/);
    await t.api.putBootSource({ kernel_image_path: 'vmlinux' });
    await rejects(
      t.api.loadSnapshot({ snapshot_path: 's', mem_backend: { backend_type: 'File', backend_path: 'm' }, resume_vm: true }),
      'fc.loadSnapshot',
      /after configuring boot-specific resources/,
    );
    await t.api.putDrive({ drive_id: 'rootfs', is_root_device: false, is_read_only: true, path_on_host: 'rootfs.img' });
    await t.api.putVsock({ guest_cid: 3, uds_path: 'run/v.sock' });
    await t.api.instanceStart();
    await rejects(t.api.putMachineConfig({ vcpu_count: 1, mem_size_mib: 128 }), 'fc.putMachineConfig', /not supported after starting/);
    await rejects(t.api.createSnapshot({ snapshot_path: 'vmstate', mem_file_path: 'mem' }), 'fc.createSnapshot', /not paused/);
    await t.api.pauseVm();
    await t.api.createSnapshot({ snapshot_path: 'vmstate', mem_file_path: 'mem', snapshot_type: 'Full' });
    await t.api.resumeVm();
    assert.equal((await t.api.describeInstance()).state, 'Running');
    assert.deepEqual(
      t.fake.requests.filter((r) => r.fault?.startsWith('invalid request')),
      [],
      'the driver never sent an invalid body',
    );
  } finally {
    await t.done();
  }
});

test('snapshot load needs the vsock socket directory to exist', async () => {
  const a = await started();
  const b = await started();
  try {
    await a.api.putBootSource({ kernel_image_path: 'vmlinux' });
    await a.api.putDrive({ drive_id: 'rootfs', is_root_device: false, is_read_only: true, path_on_host: 'rootfs.img' });
    await a.api.putVsock({ guest_cid: 3, uds_path: 'run/v.sock' });
    await a.api.instanceStart();
    await a.api.pauseVm();
    await a.api.createSnapshot({ snapshot_path: join(a.dir, 'vmstate'), mem_file_path: join(a.dir, 'mem') });
    await rm(join(b.dir, 'run'), { recursive: true });
    const load = { snapshot_path: join(a.dir, 'vmstate'), mem_backend: { backend_type: 'File' as const, backend_path: join(a.dir, 'mem') }, resume_vm: true };
    await rejects(b.api.loadSnapshot(load), 'fc.loadSnapshot', /vsock.*No such file or directory/);
    await mkdir(join(b.dir, 'run'));
    const c = new FirecrackerApi({ socketPath: b.fake.apiSocketPath });
    await c.loadSnapshot(load);
    assert.equal((await c.describeInstance()).state, 'Running');
  } finally {
    await a.done();
    await b.done();
  }
});

test('transport failures are clear: missing socket, non-JSON fault bodies, timeouts', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kfc-api-'));
  try {
    const api = new FirecrackerApi({ socketPath: join(dir, 'missing.sock'), requestTimeoutMs: 200 });
    const e = (await api.putLogger({}).then(
      () => undefined,
      (x: unknown) => x,
    )) as FirecrackerApiError;
    assert.match(e.message, /fc\.putLogger failed: cannot reach the API socket .*missing\.sock: .*ENOENT/);
    const w = (await api.waitReady(100, { intervalMs: 20 }).then(
      () => undefined,
      (x: unknown) => x,
    )) as FirecrackerApiError;
    assert.equal(w.code, 'TIMEOUT');
    assert.match(w.message, /did not answer within 100 ms/);
    const dead = (await api.waitReady(1000, { isAlive: () => false }).then(
      () => undefined,
      (x: unknown) => x,
    )) as FirecrackerApiError;
    assert.match(dead.message, /exited before its API socket/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // The raw socket check: the fake answers unknown paths exactly like Firecracker's error shape.
  const t = await started();
  try {
    const body = await new Promise<string>((resolve) => {
      request({ socketPath: t.fake.apiSocketPath, method: 'PUT', path: '/nope', headers: { 'Content-Type': 'application/json' } }, (res) => {
        let s = '';
        res.on('data', (c: Buffer) => {
          s += c;
        });
        res.on('end', () => resolve(`${res.statusCode} ${s}`));
      }).end('{}');
    });
    assert.match(body, /^400 \{"fault_message":"invalid request: no path \/nope/);
  } finally {
    await t.done();
  }
});
