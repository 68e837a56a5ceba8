/**
 * A jailed Firecracker VM through kiln's network manager: attach gives it a host link `kv…` on
 * kiln's bridge (a veth whose peer is in the VM's namespace, bridged there to its TAP), detach and
 * destroy take everything away, a restarted service's scan and restore remove a crashed one's.
 *
 * No Firecracker can run here, so nothing of a guest reads the TAP. A stand-in does
 * (tap-guest.py, attached to the TAP as Firecracker attaches): it asks for the gateway's MAC and
 * sends a DNS query to the gateway, which must come back through veth, bridge and kiln's resolver.
 * That is the data path up to the TAP, not Firecracker's virtio-net behind it. Everything stays on
 * this machine: kiln's uplink is the test "internet" (test/net/fake-internet.ts).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { netnsPath, netnsPrefix } from '../../src/backends/firecracker/netns.js';
import { loadConfig } from '../../src/core/config.js';
import { NetworkManager } from '../../src/net/manager.js';
import { type FakeInternet, leftovers, NAMES, startFakeInternet } from '../net/fake-internet.js';
import { type Fixture, fixture, READY } from './helpers.js';

const run = promisify(execFile);
const python = await run('python3', ['--version']).then(
  () => true,
  () => false,
);
const skip = process.getuid?.() !== 0 ? 'network namespaces, TAPs, bridges and nftables need root' : !python ? 'python3 plays the guest on the TAP' : undefined;

async function link(name: string): Promise<string | undefined> {
  return run('ip', ['-d', '-o', 'link', 'show', 'dev', name]).then(
    (r) => r.stdout,
    () => undefined,
  );
}

async function jailed(runDir?: string): Promise<Fixture> {
  return fixture({ fake: { checkTaps: true }, backend: { jailer: 'required', jailerPath: '/bin/true', network: true, snapshots: false, ...(runDir ? { runDir } : {}) } });
}

describe('jailed Firecracker through the network manager', { skip, timeout: 120_000 }, () => {
  let net: FakeInternet;
  let env: Record<string, string>;

  before(async () => {
    net = await startFakeInternet();
    env = net.env();
  });
  after(async () => {
    await net?.close();
  });

  it("attach puts the VM's veth on kiln's bridge, a stand-in guest on the TAP reaches the gateway and kiln's resolver, detach and destroy leave nothing", async (t) => {
    const f = await jailed();
    const config = loadConfig(env).network;
    const manager = new NetworkManager(config, f.runDir);
    try {
      const sb = await f.backend.create(f.spec('sb-jdp'), READY);
      const request = { policy: 'allowlist' as const, allow: ['allowed.example'] };
      const info = await manager.attach(sb.id, sb, manager.check(request)!, request);
      const netns = String(sb.details.netns);
      assert.equal(netns, `${netnsPrefix(f.runDir)}sb-jdp`);
      const host = (await link(info.hostInterface))!;
      assert.match(host, /^\d+: kv[0-9a-f]+@if\d+:/, 'the host end is kiln-named, a veth');
      assert.match(host, new RegExp(`link-netns ${netns} `));
      assert.match(host, new RegExp(`master ${config.name}0 `), "on kiln's bridge");
      assert.match(host, / isolated on /);
      assert.deepEqual(f.launcher.instances[0]!.agentLog.ops, ['hello', 'net.config']);
      t.diagnostic(`attach ${info.attachMs} ms; the VM's link (veth + bridges) ${JSON.stringify(sb.details.network)}`);
      assert.deepEqual(await manager.events(sb.id).then((e) => e?.counters.refused), 0);

      const tap = String(sb.details.tap);
      const guest = await run(
        'nsenter',
        [`--net=${netnsPath(netns)}`, '--', 'python3', join(import.meta.dirname, 'tap-guest.py'), tap, '02:6b:00:00:00:42', info.address, info.gateway, '53', 'allowed.example'],
        {
          timeout: 20_000,
        },
      );
      const bridgeMac = /link\/ether (\S+)/.exec((await link(`${config.name}0`))!)![1];
      assert.match(guest.stdout, new RegExp(`^gateway-mac ${bridgeMac}$`, 'm'), 'the gateway (kiln bridge) answered ARP through veth and the jail bridge');
      assert.match(guest.stdout, new RegExp(`^answer ${NAMES['allowed.example'].replaceAll('.', '\\.')}$`, 'm'), "kiln's resolver answered the query sent to port 53");
      const events = (await manager.events(sb.id))!;
      assert.ok(
        events.events.some((e) => e.kind === 'dns' && e.name === 'allowed.example' && e.verdict === 'allowed'),
        JSON.stringify(events.events),
      );

      await manager.detach(sb.id);
      assert.equal(await link(info.hostInterface), undefined, 'detach deletes the pair');
      assert.ok(existsSync(netnsPath(netns)), 'the namespace lives as long as the VM');
      await sb.destroy();
      assert.equal(existsSync(netnsPath(netns)), false);
      await manager.close(new Set());
      assert.deepEqual(leftovers(config.name, config.subnet), []);
    } finally {
      await manager.close(new Set()).catch(() => undefined);
      await f.close();
    }
  });

  it("a crashed service's jailed VM: the next start's scan and restore remove its namespace, veth, bridge and table", async () => {
    const f = await jailed();
    const config = loadConfig(env).network;
    const manager = new NetworkManager(config, f.runDir);
    let next: Fixture | undefined;
    try {
      const sb = await f.backend.create(f.spec('sb-jdp-crash'), READY);
      const request = { policy: 'allowlist' as const, allow: ['allowed.example'] };
      const info = await manager.attach(sb.id, sb, manager.check(request)!, request);
      // The service dies: its Firecracker with it (jailed VMs are not kept), nothing is released.
      f.launcher.instances[0]!.exit('killed with the service');
      next = await jailed(f.runDir);
      const scan = await next.backend.scan();
      assert.ok(scan.removed.includes(`removed leftover network namespace ${netnsPrefix(f.runDir)}sb-jdp-crash`), scan.removed.join('\n'));
      assert.equal(await link(info.hostInterface), undefined, 'the veth went with the namespace');
      const restarted = new NetworkManager(config, f.runDir);
      const restored = await restarted.restore(new Set());
      assert.deepEqual(restored.restored, []);
      assert.ok(restored.removed.includes('network state of sb-jdp-crash'), restored.removed.join('\n'));
      assert.deepEqual(leftovers(config.name, config.subnet), []);
    } finally {
      await manager.close(new Set()).catch(() => undefined);
      await next?.close();
      await f.close();
    }
  });
});
