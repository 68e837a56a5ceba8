/**
 * kiln's network for jailed Firecracker VMs (docs/networking.md, netns.ts): kiln makes and names
 * each VM's network namespace, passes it to the jailer (`--netns`), makes the TAP there, and
 * connectNetwork joins it to the bridge with a veth pair. Against the fake Firecracker started by
 * the backend as the jailer would be (every request validated against the API description); the
 * fake opens each NIC's host_dev_name in the namespace the jailer was told to join, as the VM's
 * uid, and refuses it (400) as Firecracker would when it is not there.
 *
 * The namespaces, TAPs, veths and bridge membership are real and asserted; no packet crosses
 * them (no Firecracker can run here, so nothing reads the TAP): the bridge is the test's own, has
 * no address and no uplink.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { JAIL_BRIDGE, JAIL_UPLINK, netnsPrefix } from '../../src/backends/firecracker/netns.js';
import type { SandboxNetworkPlan } from '../../src/core/backend.js';
import { type Fixture, fixture, READY } from './helpers.js';

const run = promisify(execFile);
const skip = process.getuid?.() !== 0 ? 'network namespaces, TAPs and veths need root' : undefined;
const tag = randomBytes(3).toString('hex');
const BRIDGE = `ktf${tag}b`;

async function ip(...args: string[]): Promise<string> {
  return (await run('ip', args)).stdout;
}

async function link(name: string, netns?: string): Promise<string | undefined> {
  return ip(...(netns ? ['-n', netns] : []), '-d', '-o', 'link', 'show', 'dev', name).catch(() => undefined);
}

function plan(n: number, bridge: string | null = BRIDGE): SandboxNetworkPlan {
  return {
    hostIf: `kv${tag}${n}`,
    ...(bridge ? { bridge } : {}),
    mac: `02:6b:00:0a:e8:0${n}`,
    address: `10.232.0.${n}`,
    prefix: 24,
    gateway: '10.232.0.1',
    dns: ['10.232.0.1'],
  };
}

/** This run dir's VM namespaces that exist now. */
async function namespacesOf(f: Fixture): Promise<string[]> {
  const prefix = netnsPrefix(f.runDir);
  return (await ip('netns', 'list')).split('\n').flatMap((l) => (l.startsWith(prefix) ? [l.split(' ')[0]!] : []));
}

/** kiln links of this test (host ends) and TAPs a fake was given, in the host's namespace. */
async function hostLinks(taps: string[]): Promise<string[]> {
  return (await ip('-o', 'link'))
    .split('\n')
    .map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '')
    .filter((n) => n.startsWith(`kv${tag}`) || taps.includes(n));
}

async function jailed(o: Parameters<typeof fixture>[0] = {}): Promise<Fixture> {
  // /bin/true stands in for the jailer binary: the fake launcher reads the jailer's argv instead of running it.
  return fixture({ ...o, fake: o.fake ?? { checkTaps: true }, backend: { jailer: 'required', jailerPath: '/bin/true', network: true, ...o.backend } });
}

/** The host_dev_name each fake was given (PUT /network-interfaces or network_overrides). */
function tapsOf(f: Fixture): string[] {
  return f.launcher.instances.flatMap((fake) =>
    fake.requests.flatMap((r) => {
      const b = r.body as { host_dev_name?: string; network_overrides?: { host_dev_name: string }[] } | undefined;
      return [...(b?.host_dev_name ? [b.host_dev_name] : []), ...(b?.network_overrides ?? []).map((n) => n.host_dev_name)];
    }),
  );
}

describe('jailed Firecracker networking', { skip, timeout: 60_000 }, () => {
  before(async () => {
    await ip('link', 'add', BRIDGE, 'type', 'bridge');
    await ip('link', 'set', 'dev', BRIDGE, 'addrgenmode', 'none');
    await ip('link', 'set', 'dev', BRIDGE, 'up');
  });

  after(async () => {
    await ip('link', 'del', BRIDGE).catch(() => undefined);
  });

  it("makes and names the VM's namespace, its TAP there, a veth on the bridge at connectNetwork; destroy leaves nothing", async () => {
    const f = await jailed();
    try {
      const sb = await f.backend.create(f.spec('sb-jnet'), READY);
      const [tpl, clone] = f.launcher.instances;
      assert.ok(tpl && clone, 'a template and a clone');
      for (const fake of [tpl, clone])
        assert.deepEqual(
          fake.requests.filter((r) => r.status >= 400).map((r) => `${r.path}: ${r.fault}`),
          [],
        );
      const netns = `${netnsPrefix(f.runDir)}sb-jnet`;
      assert.equal(clone.place.netnsPath, `/run/netns/${netns}`, 'the jailer joins the namespace kiln made and named');
      assert.ok(tpl.place.netnsPath && tpl.place.netnsPath !== clone.place.netnsPath, 'the template had a namespace of its own');
      assert.deepEqual(await namespacesOf(f), [netns], "the template's namespace went with the template");
      assert.equal(sb.details.netns, netns);

      const nic = tpl.requests.find((r) => r.path === '/network-interfaces/eth0')!.body as { host_dev_name: string };
      const load = clone.requests.find((r) => r.path === '/snapshot/load')!.body as { network_overrides: { iface_id: string; host_dev_name: string }[] };
      const tap = load.network_overrides[0]!.host_dev_name;
      assert.match(nic.host_dev_name, /^kq[0-9a-f]{8}$/);
      assert.deepEqual(load.network_overrides, [{ iface_id: 'eth0', host_dev_name: tap }]);
      const tapLink = (await link(tap, netns))!;
      assert.match(tapLink, / tun type tap .* user \d+ /, 'the TAP is in the jail namespace');
      assert.match(tapLink, new RegExp(` user ${clone.place.uid} `), "owned by the VM's uid");
      assert.match(tapLink, new RegExp(`master ${JAIL_BRIDGE} `));
      assert.doesNotMatch(tapLink, /[<,]UP[,>]/, 'down until connectNetwork');
      assert.equal(await link(tap), undefined, "not in the host's namespace");

      const p = { ...plan(1), sendMbit: 40 };
      await sb.connectNetwork!(p);
      // What the sandbox sends: Firecracker's limiter on the guest's transmit (40 Mbit/s = 500 kB per 100 ms).
      assert.deepEqual(
        clone.requests.filter((r) => r.method === 'PATCH').map((r) => [r.path, r.body, r.status]),
        [['/network-interfaces/eth0', { iface_id: 'eth0', tx_rate_limiter: { bandwidth: { size: 500_000, refill_time: 100 } } }, 204]],
      );
      const host = (await link(p.hostIf))!;
      assert.match(host, /^\d+: [^@]+@if\d+:/, 'a veth');
      assert.match(host, new RegExp(`link-netns ${netns}`), 'its peer is in the jail namespace');
      assert.match(host, new RegExp(`master ${BRIDGE} `), "on the network plan's bridge");
      assert.match(host, / isolated on /, 'an isolated port, as every sandbox link');
      assert.match(host, /[<,]UP[,>]/);
      const inner = (await link(JAIL_UPLINK, netns))!;
      assert.match(inner, new RegExp(`master ${JAIL_BRIDGE} `), 'the inner end is bridged to the TAP');
      assert.match(inner, /[<,]UP[,>]/);
      assert.match((await link(tap, netns))!, /[<,]UP[,>]/, 'the TAP is up');
      assert.deepEqual(clone.agentLog.ops, ['hello', 'net.config'], 'the guest configured eth0 (net.config)');
      assert.equal(sb.details.hostInterface, p.hostIf);

      await sb.destroy();
      assert.deepEqual(await namespacesOf(f), []);
      assert.deepEqual(await hostLinks(tapsOf(f)), []);
      assert.equal(existsSync(`/run/netns/${netns}`), false);
    } finally {
      await f.close();
    }
  });

  it('a TAP in the wrong namespace is refused as Firecracker would (the fake checks, so the test above can fail)', async () => {
    const f = await jailed({ backend: { snapshots: false } });
    try {
      const sb = await f.backend.create(f.spec('sb-jcheck'), READY);
      const fake = f.launcher.instances[0]!;
      const tap = tapsOf(f)[0]!;
      const body = JSON.stringify({ iface_id: 'eth1', host_dev_name: tap });
      // The same name, opened from the host's namespace (no --netns), is no TAP there.
      const { FakeFirecracker } = await import('./fake-firecracker.js');
      const outside = new FakeFirecracker(`${f.root}/outside.sock`, f.root, { checkTaps: true }, { uid: fake.place.uid });
      // biome-ignore lint/suspicious/noExplicitAny: reaching the handler without an HTTP round trip
      const answer = (outside as any).handle('PUT', '/network-interfaces/eth1', body) as { status: number; body: { fault_message: string } };
      assert.equal(answer.status, 400);
      assert.match(answer.body.fault_message, /Open tap device failed/);
      // biome-ignore lint/suspicious/noExplicitAny: as above
      const inside = (new FakeFirecracker(`${f.root}/inside.sock`, f.root, { checkTaps: true }, { ...fake.place, uid: 1 }) as any).handle('PUT', '/network-interfaces/eth1', body) as {
        body: { fault_message: string };
      };
      assert.match(inside.body.fault_message, /uid 1 may not open it/);
      await sb.destroy();
    } finally {
      await f.close();
    }
  });

  it('a failed create removes the namespace, the TAP and the template namespace', async () => {
    // The clone's snapshot load fails, then (cold boot) InstanceStart fails.
    for (const o of [
      { snapshots: true, fake: (n: number) => ({ checkTaps: true, ...(n === 1 ? { failOn: { request: 'PUT /snapshot/load', message: 'fake: load failed' } } : {}) }) },
      { snapshots: false, fake: { checkTaps: true, failOn: { request: 'PUT /actions', message: 'fake: start failed' } } },
    ]) {
      const f = await jailed({ fake: o.fake, backend: { snapshots: o.snapshots } });
      try {
        await assert.rejects(f.backend.create(f.spec('sb-jfail'), READY), /fake: (load|start) failed/);
        assert.ok(tapsOf(f).length > 0, 'a TAP was made and given to Firecracker');
        assert.deepEqual(await namespacesOf(f), []);
        assert.deepEqual(await hostLinks(tapsOf(f)), []);
      } finally {
        await f.close();
      }
    }
  });

  it("the start-up scan removes a crashed service's namespaces and veths, and only its own", async () => {
    const crashed = await jailed({ backend: { snapshots: false } });
    const other = await jailed({ backend: { snapshots: false } });
    let next: Fixture | undefined;
    try {
      const sb = await crashed.backend.create(crashed.spec('sb-jcrash'), READY);
      await sb.connectNetwork!(plan(2));
      const survivor = await other.backend.create(other.spec('sb-jother'), READY);
      const netns = `${netnsPrefix(crashed.runDir)}sb-jcrash`;
      assert.deepEqual(await namespacesOf(crashed), [netns]);
      // The service is gone without a destroy; the next one on the same run dir scans.
      crashed.launcher.instances[0]!.exit('killed with the service');
      next = await jailed({ backend: { snapshots: false, runDir: crashed.runDir } });
      const report = await next.backend.scan();
      assert.ok(report.removed.includes(`removed leftover network namespace ${netns}`), report.removed.join('\n'));
      assert.deepEqual(await namespacesOf(crashed), []);
      assert.equal(await link(plan(2).hostIf), undefined, 'the veth went with it');
      assert.deepEqual(await namespacesOf(other), [`${netnsPrefix(other.runDir)}sb-jother`], "another instance's namespace is left alone");
      await survivor.destroy();
      assert.deepEqual(await namespacesOf(other), []);
    } finally {
      await next?.close();
      await crashed.close();
      await other.close();
    }
  });

  it('without a bridge in the plan the host end is up on no bridge (as for the other backends); a second connect replaces the pair', async () => {
    const f = await jailed({ backend: { snapshots: false } });
    try {
      const sb = await f.backend.create(f.spec('sb-jnob'), READY);
      const p = plan(3, null);
      await sb.connectNetwork!(p);
      const host = (await link(p.hostIf))!;
      assert.match(host, /[<,]UP[,>]/);
      assert.doesNotMatch(host, / master /);
      // Connected again while the first pair is still there: it is replaced, not doubled.
      const again = plan(4);
      await sb.connectNetwork!(again);
      assert.equal(await link(p.hostIf), undefined, 'the first pair is gone');
      assert.match((await link(again.hostIf))!, new RegExp(`master ${BRIDGE} `));
      await sb.destroy();
      assert.equal(await link(again.hostIf), undefined);
    } finally {
      await f.close();
    }
  });
});
