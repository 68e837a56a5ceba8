/**
 * Sandboxes outlive the service: SIGKILL it under load (sandboxes with execs running), start it
 * again: every sandbox is listed again under its id, with its labels, env and TTL, its files and
 * background processes intact; one that died meanwhile is reported lost with the reason; an
 * orphan (no record) is removed by the scan. A graceful stop keeps sandboxes too, unless the
 * operator asks for the old behaviour (KILN_STOP_SANDBOXES_ON_EXIT=1). Nothing is left at the end.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnClient } from '../../sdk/src/index.js';
import { mountsUnder, removeTree } from '../../src/images/fsutil.js';
import { cgroupNameFor } from '../../src/server/backends.js';
import { cgroupChildren, cgroupParent, exited, running, statusField, until } from '../parity/leaks.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';

const COUNT = Number(process.env.KILN_TEST_SURVIVE_COUNT ?? 8);
/** The product's default; the test harness's is to delete sandboxes at a stop. */
const KEEP = { KILN_STOP_SANDBOXES_ON_EXIT: '0' };

/** What a process is (its state, parent, cgroup and children), for a failure that names one left over. */
function whatIs(pid: number): string {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const cgroup = readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().replaceAll('\n', ' ');
    const children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim() || 'none';
    return `${pid} (state ${statusField(status, 'State').join(' ')}, ppid ${statusField(status, 'PPid')[0]}, cgroup ${cgroup}, children ${children})`;
  } catch {
    return `${pid} (gone)`;
  }
}

/** A run dir of its own (sandbox uids must traverse to it), a free port and a client for it. */
async function place(name: string): Promise<{ base: string; runDir: string; port: number; client: KilnClient }> {
  const base = await mkdtemp(join(tmpdir(), `kiln-${name}-`));
  await chmod(base, 0o755);
  const port = await freePort();
  return { base, runDir: join(base, 'run'), port, client: new KilnClient({ baseUrl: `http://127.0.0.1:${port}` }) };
}

describe('sandboxes survive a restart of the service', { skip: process.getuid?.() === 0 ? undefined : 'needs root', timeout: 300_000 }, () => {
  it('SIGKILL under load, then restart: every sandbox back and usable, a dead one lost with its reason, orphans removed, nothing left after', async () => {
    const { base, runDir, port, client } = await place('crash');
    let svc = spawnService(runDir, port, KEEP);
    const pids: number[] = [];
    try {
      await untilHealthy(client, svc);
      const sbs = await Promise.all(Array.from({ length: COUNT }, (_, i) => client.sandboxes.create({ pack: 'shell', labels: { n: String(i) }, env: { FOO: `bar${i}` }, ttlSec: 600 })));
      pids.push(...sbs.map((s) => s.details.pid as number));
      for (const [i, sb] of sbs.entries()) {
        await client.sandboxes.exec(sb.id, { cmd: `echo kept-${i} > /workspace/f; (setsid sleep 1000 &); sleep 1000 & echo $! > /tmp/bg.pid` });
      }
      // Under load: an exec running in every sandbox when the service dies; each must fail, never hang or succeed.
      const inFlight = sbs.map((sb) =>
        client.sandboxes.exec(sb.id, { cmd: 'sleep 20; echo finished' }).then(
          (r) => `resolved: ${r.stdout}`,
          (e: Error) => `rejected: ${e.message}`,
        ),
      );
      await sleep(500);
      const orphan = join(cgroupParent(cgroupNameFor(runDir)), 'sb-0000000000000000');
      svc.child.kill('SIGKILL');
      await exited(svc.child);
      const outcomes = await Promise.all(inFlight);
      assert.ok(
        outcomes.every((o) => o.startsWith('rejected')),
        `in-flight execs fail: ${outcomes.join(', ')}`,
      );
      assert.ok(pids.every(running), 'sandbox processes outlive the service');

      // While it is down: one sandbox dies, and an orphan cgroup (no record) appears.
      process.kill(pids[0]!, 'SIGKILL');
      await until(() => !running(pids[0]!), 5000);
      mkdirSync(orphan);

      const t0 = performance.now();
      svc = spawnService(runDir, port, KEEP);
      await untilHealthy(client, svc);
      const upMs = performance.now() - t0;
      const listed = await client.sandboxes.list();
      assert.deepEqual(
        listed.map((s) => s.id).sort(),
        sbs
          .slice(1)
          .map((s) => s.id)
          .sort(),
        'all but the dead one are listed again',
      );
      for (const [i, sb] of sbs.entries()) {
        if (i === 0) continue;
        const now = listed.find((s) => s.id === sb.id)!;
        assert.deepEqual(now.labels, { n: String(i) });
        assert.equal(now.expiresAt, sb.expiresAt, 'the TTL runs on from the first start');
        assert.equal(now.createdAt, sb.createdAt);
        const r = await client.sandboxes.exec(sb.id, { cmd: 'cat /workspace/f; kill -0 $(cat /tmp/bg.pid) && echo bg-alive; echo $FOO' });
        assert.equal(r.stdout, `kept-${i}\nbg-alive\nbar${i}\n`);
      }
      const log = svc.stderr();
      assert.match(log, new RegExp(`${sbs[0]!.id}[^\\n]*ended while the service was not running`), 'the dead one is reported lost with the reason');
      const reattachMs = /"reattached":\d+[^\n]*"ms":(\d+)/.exec(log)?.[1];
      process.stderr.write(`# ${COUNT} sandboxes: reattach ${reattachMs} ms, restart to healthy ${Math.round(upMs)} ms\n`);
      assert.ok(!cgroupChildren(cgroupNameFor(runDir)).includes('sb-0000000000000000'), 'the scan removed the orphan cgroup');
      assert.ok(!cgroupChildren(cgroupNameFor(runDir)).includes(sbs[0]!.id), 'the lost sandbox left no cgroup');

      for (const sb of sbs.slice(1)) await client.sandboxes.delete(sb.id);
      assert.deepEqual(pids.filter(running), [], 'deleting a reattached sandbox ends its processes');
      assert.deepEqual(cgroupChildren(cgroupNameFor(runDir)), []);
      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0);
      assert.deepEqual(await mountsUnder(runDir), [], 'no image mount left behind');
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      for (const pid of pids) if (running(pid)) process.kill(pid, 'SIGKILL');
      await sleep(200);
      await removeTree(base); // unmounts what a failed run left first
    }
  });

  it('a SIGTERM as soon as the service answers stops it cleanly (its handlers are in before the listeners)', async () => {
    const { base, runDir, port, client } = await place('early');
    const svc = spawnService(runDir, port, KEEP);
    try {
      // Polled closely: the first answer comes while the apps listener may still be starting.
      for (
        let i = 0;
        i < 6000 &&
        !(await client.health().then(
          () => true,
          () => false,
        ));
        i++
      )
        await sleep(5);
      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0, `stopped by its own handler, not the default action: ${svc.stderr().slice(-1000)}`);
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      await sleep(200);
      await removeTree(base);
    }
  });

  it('a graceful stop keeps the sandboxes; with KILN_STOP_SANDBOXES_ON_EXIT=1 (and a second SIGTERM) it leaves nothing', async () => {
    const { base, runDir, port, client } = await place('sigterm');
    let svc = spawnService(runDir, port, KEEP);
    const pids: number[] = [];
    try {
      await untilHealthy(client, svc);
      const sbs = await Promise.all([0, 1].map(() => client.sandboxes.create({ pack: 'shell' })));
      pids.push(...sbs.map((s) => s.details.pid as number));
      await client.sandboxes.exec(sbs[0]!.id, { cmd: 'echo hi > /workspace/f' });
      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0);
      assert.ok(pids.every(running), 'the sandboxes run on');

      svc = spawnService(runDir, port, { KILN_STOP_SANDBOXES_ON_EXIT: '1' });
      await untilHealthy(client, svc);
      assert.deepEqual((await client.sandboxes.list()).map((s) => s.id).sort(), sbs.map((s) => s.id).sort());
      assert.equal((await client.sandboxes.exec(sbs[0]!.id, { cmd: 'cat /workspace/f' })).stdout, 'hi\n');

      const stopped = exited(svc.child);
      svc.child.kill('SIGTERM');
      await sleep(20);
      svc.child.kill('SIGTERM'); // as a supervisor and a terminal both would
      assert.equal(await stopped, 0, 'the service stopped on its own, not by the signal');
      await until(() => !pids.some(running), 5000);
      assert.deepEqual(pids.filter(running), []);
      assert.deepEqual(await mountsUnder(runDir), [], 'no image mount left behind');
      assert.deepEqual(cgroupChildren(cgroupNameFor(runDir)), [], 'no sandbox cgroup left behind');
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      for (const pid of pids) if (running(pid)) process.kill(pid, 'SIGKILL');
      await sleep(200);
      await removeTree(base);
    }
  });
  it('creates cut short by SIGKILL leave no sandbox running: after the restart every live sandbox process is a listed sandbox', async () => {
    const { base, runDir, port, client } = await place('cutshort');
    let svc = spawnService(runDir, port, KEEP);
    // A sandbox's bwrap runs as long as its sandbox, and its command line names the run dir.
    const sandboxProcesses = (): number[] =>
      readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .filter((d) => {
          try {
            const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
            return argv[0]!.endsWith('bwrap') && argv.some((a) => a.startsWith(runDir));
          } catch {
            return false; // gone meanwhile
          }
        })
        .map(Number);
    try {
      let cutShort = 0;
      // Each round: unpooled creates in flight, then SIGKILL at a different moment of their start.
      for (const delayMs of [15, 30, 45, 60, 90]) {
        await untilHealthy(client, svc);
        const creates = Array.from({ length: 4 }, () =>
          client.sandboxes.create({ pack: 'shell' }).then(
            () => 'created',
            () => 'failed',
          ),
        );
        await sleep(delayMs);
        svc.child.kill('SIGKILL');
        await exited(svc.child);
        cutShort += (await Promise.all(creates)).filter((o) => o === 'failed').length;
        const killed = svc;
        svc = spawnService(runDir, port, KEEP);
        await untilHealthy(client, svc);
        const listed = await client.sandboxes.list();
        const listedPids = new Set(listed.map((sb) => sb.details.pid as number));
        // A sandbox whose agent saw the service go before its record existed ends by itself, at once.
        await until(() => sandboxProcesses().length === listed.length, 5000);
        assert.equal(
          sandboxProcesses().length,
          listed.length,
          `round ${delayMs} ms: sandbox processes ${sandboxProcesses().map(whatIs).join('; ')} against ${listed.length} listed; the killed service said: ${killed.stderr().slice(-1000)}; the new one: ${svc.stderr().slice(-1000)}`,
        );
        for (const sb of listed) assert.ok(listedPids.has(sb.details.pid as number) && running(sb.details.pid as number));
        for (const sb of listed) await client.sandboxes.delete(sb.id);
      }
      process.stderr.write(`# creates cut short by SIGKILL: ${cutShort} of 20\n`);
      assert.ok(cutShort > 0, 'some creates were in flight at the SIGKILL');
      assert.deepEqual(sandboxProcesses(), []);
      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0);
      assert.deepEqual(cgroupChildren(cgroupNameFor(runDir)), [], 'no sandbox cgroup left behind');
      assert.deepEqual(await mountsUnder(runDir), [], 'no image mount left behind');
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      for (const pid of sandboxProcesses()) process.kill(pid, 'SIGKILL');
      await sleep(200);
      await removeTree(base);
    }
  });
});
