/**
 * kiln's NIC on Firecracker VMs (the backend's `network` option), against the fake API server
 * (every request validated against the official API description) and real TAP devices: the
 * template's TAP is named at PUT /network-interfaces, each clone gets its own through the
 * snapshot load's `network_overrides`, connectNetwork renames it and runs net.config, destroy
 * deletes it. The fake opens each host_dev_name as Firecracker would (a TAP in its namespace, here
 * the host's). The TAPs stay down and on no bridge: no packet goes anywhere. Jailed VMs, whose TAP
 * is in a namespace of their own: jail-network.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { INITIAL_GUEST_MAC } from '../../src/core/host-taps.js';
import { fixture, READY } from './helpers.js';

const execFileAsync = promisify(execFile);
const skip = process.getuid?.() !== 0 ? 'TAP devices need root' : undefined;

async function link(name: string): Promise<string | undefined> {
  return execFileAsync('ip', ['-o', 'link', 'show', 'dev', name]).then(
    (r) => r.stdout,
    () => undefined,
  );
}

test('every VM gets its own TAP: the template at PUT /network-interfaces, a clone through network_overrides; connectNetwork renames it; destroy deletes it', { skip }, async () => {
  const f = await fixture({ backend: { network: true }, fake: { checkTaps: true } });
  const hostIf = `kt${randomBytes(3).toString('hex')}f`;
  try {
    const sb = await f.backend.create(f.spec('sb-net'), READY);
    const [tpl, clone] = f.launcher.instances;
    assert.ok(tpl && clone, 'a template and a clone');
    for (const fake of [tpl, clone])
      assert.deepEqual(
        fake.requests.filter((r) => r.status >= 400),
        [],
      );
    const nic = tpl.requests.find((r) => r.path === '/network-interfaces/eth0')!.body as { host_dev_name: string };
    assert.match(nic.host_dev_name, /^kq[0-9a-f]{8}$/);
    assert.deepEqual(nic, { iface_id: 'eth0', host_dev_name: nic.host_dev_name, guest_mac: INITIAL_GUEST_MAC });
    assert.equal(await link(nic.host_dev_name), undefined, "the template's TAP went with the template");

    const load = clone.requests.find((r) => r.path === '/snapshot/load')!.body as { network_overrides: Array<{ iface_id: string; host_dev_name: string }> };
    const tap = load.network_overrides[0]!.host_dev_name;
    assert.deepEqual(load.network_overrides, [{ iface_id: 'eth0', host_dev_name: tap }]);
    assert.notEqual(tap, nic.host_dev_name);
    assert.equal(sb.details.tap, tap);
    assert.doesNotMatch((await link(tap))!, /[<,]UP[,>]/, 'down until connectNetwork');

    const plan = { hostIf, mac: '02:6b:00:0a:e7:09', address: '10.231.0.9', prefix: 24, gateway: '10.231.0.1', dns: ['10.231.0.1'] };
    await sb.connectNetwork!(plan);
    assert.equal(await link(tap), undefined);
    assert.match((await link(hostIf))!, /[<,]UP[,>]/);
    assert.deepEqual(clone.agentLog.ops, ['hello', 'net.config']);
    assert.equal(sb.details.tap, hostIf);

    await sb.destroy();
    assert.equal(await link(hostIf), undefined, 'destroy deletes the TAP under its new name');
  } finally {
    await f.close();
    await execFileAsync('ip', ['link', 'del', hostIf]).catch(() => undefined);
  }
});

test('without the network option no VM has a NIC', async () => {
  const f = await fixture();
  try {
    const sb = await f.backend.create(f.spec('sb-none'), READY);
    assert.equal(sb.connectNetwork, undefined);
    for (const fake of f.launcher.instances) {
      assert.equal(
        fake.requests.some((r) => r.path.startsWith('/network-interfaces/')),
        false,
      );
      assert.equal((fake.requests.find((r) => r.path === '/snapshot/load')?.body as { network_overrides?: unknown } | undefined)?.network_overrides, undefined);
    }
    await sb.destroy();
  } finally {
    await f.close();
  }
});
