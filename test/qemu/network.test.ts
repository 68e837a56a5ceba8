/**
 * Sandbox networking on QEMU VMs: every VM has a NIC on a TAP of its own, down and on no bridge
 * until connectNetwork names it, brings it up and configures the guest (net.config).
 *
 * Nothing here can leave the machine: the bridge (10.231.0.1/24) and the TCP server the guests
 * reach live in a network namespace the test makes (`ktq…`, no uplink, forwarding off), and a
 * connected VM's TAP is moved into it. The namespace (with everything in it) is deleted in after().
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { Backend, BackendSandbox, SandboxNetworkPlan } from '../../src/core/backend.js';
import { heldTaps, removeLeftoverTaps } from '../../src/core/host-taps.js';
import { type QemuFixture, setup, sh, skipReason, spec } from './fixture.js';

const execFileAsync = promisify(execFile);
const skip = (await skipReason()) ?? (process.getuid?.() !== 0 ? 'TAPs, bridges and namespaces need root' : undefined);
const READY = { readyTimeoutMs: 90_000 };
const tag = randomBytes(3).toString('hex');
const NS = `ktq${tag}`;
const BRIDGE = `ktq${tag}`;
const PORT = 18_231;
const SERVER = `require('net').createServer((s) => s.end('kiln-net-ok ' + s.remoteAddress + '\\n')).listen(${PORT}, '10.231.0.1', () => console.log('ready'))`;

async function ip(...args: string[]): Promise<string> {
  return (await execFileAsync('ip', args)).stdout;
}

function plan(n: number): SandboxNetworkPlan {
  return { hostIf: `kt${tag}${n}`, mac: `02:6b:00:0a:e7:${n.toString(16).padStart(2, '0')}`, address: `10.231.0.${n}`, prefix: 24, gateway: '10.231.0.1', dns: ['10.231.0.1', '10.231.0.53'] };
}

/** What the test's server answered the guest, or the connect error. */
async function reach(sb: BackendSandbox): Promise<string> {
  const r = await sh(sb, `timeout 5 bash -c 'exec 3<>/dev/tcp/10.231.0.1/${PORT} && cat <&3' 2>/dev/null || echo unreachable`);
  return r.stdout.trim();
}

/** Connects the sandbox as the network manager would, with the test's bridge in place of its own. */
async function connect(sb: BackendSandbox, p: SandboxNetworkPlan): Promise<void> {
  await sb.connectNetwork!(p);
  const link = await ip('-o', 'link', 'show', 'dev', p.hostIf);
  assert.match(link, /[<,]UP[,>]/, `the host end should be up: ${link}`);
  assert.doesNotMatch(link, / master /, 'the host end should be on no bridge yet');
  // Moving it into the namespace takes it down; the bridge there brings it up again.
  await ip('link', 'set', 'dev', p.hostIf, 'netns', NS);
  await ip('-n', NS, 'link', 'set', 'dev', p.hostIf, 'master', BRIDGE, 'up');
}

/** This test's TAPs still in the host or the test namespace. */
async function linksOf(taps: string[]): Promise<string[]> {
  const names = (out: string) => out.split('\n').map((l) => /^\d+: ([^:@]+)/.exec(l)?.[1] ?? '');
  const host = names(await ip('-o', 'link'));
  const ns = names(await ip('-n', NS, '-o', 'link').catch(() => ''));
  return [...host, ...ns].filter((n) => n.startsWith(`kt${tag}`) || taps.includes(n));
}

describe('qemu networking', { skip, timeout: 300_000 }, () => {
  let f: QemuFixture;
  let server: ChildProcess | undefined;
  const taps: string[] = [];

  before(async () => {
    f = await setup();
    await ip('netns', 'add', NS);
    await ip('-n', NS, 'link', 'set', 'lo', 'up');
    await ip('-n', NS, 'link', 'add', BRIDGE, 'type', 'bridge');
    await ip('-n', NS, 'addr', 'add', '10.231.0.1/24', 'dev', BRIDGE);
    await ip('-n', NS, 'link', 'set', BRIDGE, 'up');
    server = spawn('ip', ['netns', 'exec', NS, process.execPath, '-e', SERVER], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await Promise.race([once(server.stdout!, 'data'), once(server, 'exit')])) as [Buffer];
    assert.equal(String(line).trim(), 'ready', 'the test server did not start');
  });

  after(async () => {
    await f?.cleanup();
    server?.kill('SIGKILL');
    if (server && server.exitCode === null && server.signalCode === null) await once(server, 'exit');
    await ip('netns', 'del', NS).catch(() => undefined);
    const left = (await ip('-o', 'link')).split('\n').filter((l) => l.includes(`ktq${tag}`) || taps.some((t) => l.includes(`: ${t}:`)));
    assert.deepEqual(left, [], 'the test left links behind');
  });

  it('two clones of one template get their own MAC and address and both reach the bridge; a VM never connected reaches nothing', async () => {
    const backend = f.backend();
    const all: BackendSandbox[] = [];
    try {
      await clones(backend, all);
    } finally {
      for (const sb of all) await sb.destroy();
    }
    assert.deepEqual(await linksOf(all.map((sb) => String(sb.details.tap))), [], 'destroy should leave no TAP');
  });

  async function clones(backend: Backend, all: BackendSandbox[]): Promise<void> {
    for (const id of ['net-a', 'net-b', 'net-c']) all.push(await backend.create(spec(f, id), READY));
    const [a, b, c] = all as [BackendSandbox, BackendSandbox, BackendSandbox];
    for (const sb of all) {
      assert.ok(sb.details.cloneOf, 'a template clone');
      assert.match(String(sb.details.tap), /^kq[0-9a-f]{8}$/);
      taps.push(String(sb.details.tap));
    }
    assert.equal(b.details.cloneOf, a.details.cloneOf);
    // Silent until connected: eth0 has no IPv6 (no link-local address, no router solicitations).
    assert.equal((await sh(c, 'cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6')).stdout, '1\n');
    // Until connectNetwork the TAP is down and on no bridge.
    assert.doesNotMatch(await ip('-o', 'link', 'show', 'dev', String(c.details.tap)), /[<,]UP[,>]| master /);

    await connect(a, plan(2));
    await connect(b, plan(3));
    assert.equal(a.details.tap, plan(2).hostIf);
    assert.equal(await reach(a), 'kiln-net-ok 10.231.0.2');
    assert.equal(await reach(b), 'kiln-net-ok 10.231.0.3');
    assert.equal((await sh(a, 'cat /sys/class/net/eth0/address')).stdout.trim(), plan(2).mac);
    assert.equal((await sh(b, 'cat /sys/class/net/eth0/address')).stdout.trim(), plan(3).mac);
    assert.match((await sh(a, 'cat /etc/resolv.conf')).stdout, /^nameserver 10\.231\.0\.1\nnameserver 10\.231\.0\.53\n/m);
    // The exec user (uid 1000) can read it; the default route goes through the gateway.
    assert.match((await sh(a, 'ls -l /etc/resolv.conf; cat /proc/net/route')).stdout, /^-rw-r--r-- [\s\S]*\neth0\t00000000\t0100E70A\t0003\t/m);

    // c's guest is configured too, but its host end was never connected: nothing answers.
    await c.agent.netConfig({ mac: '02:6b:00:0a:e7:04', address: '10.231.0.4', prefix: 24, gateway: '10.231.0.1', dns: [] });
    assert.equal(await reach(c), 'unreachable');
  }

  it('a cold-booted VM connects as well, and a refused plan leaves it usable', async () => {
    const backend = f.backend({ templates: false });
    const d = await backend.create(spec(f, 'net-d'), READY);
    const tap = String(d.details.tap);
    try {
      assert.ok(d.details.bootMs, 'a cold boot');
      taps.push(tap);
      await assert.rejects(d.connectNetwork!({ ...plan(5), hostIf: 'kt-name-too-long-for-linux' }), /host interface name/);
      await assert.rejects(d.connectNetwork!({ ...plan(5), mac: '01:00:5e:00:00:01' }), /mac/);
      // The refused guest config took the host end down again.
      assert.doesNotMatch(await ip('-o', 'link', 'show', 'dev', plan(5).hostIf), /[<,]UP[,>]/);
      await connect(d, plan(5));
      assert.equal(await reach(d), 'kiln-net-ok 10.231.0.5');
    } finally {
      await d.destroy();
    }
    assert.deepEqual(await linksOf([tap]), []);
  });

  it("the start-up scan removes a kiln TAP nobody holds and keeps a live VM's", async () => {
    const backend = f.backend({ templates: false });
    const e = await backend.create(spec(f, 'net-e'), READY);
    const stray = `kq${tag}x`;
    try {
      const live = String(e.details.tap);
      taps.push(live, stray);
      assert.ok((await heldTaps()).has(live), 'the VM holds its TAP');
      await ip('tuntap', 'add', stray, 'mode', 'tap');
      // Only this test's names: other kiln instances on the machine keep theirs.
      const removed = await removeLeftoverTaps(new RegExp(`^(${stray}|${live})$`));
      assert.deepEqual(removed, [`removed leftover TAP ${stray}`]);
      assert.match(await ip('-o', 'link', 'show', 'dev', live), new RegExp(live));
    } finally {
      await ip('link', 'del', stray).catch(() => undefined);
      await e.destroy();
    }
  });
});
