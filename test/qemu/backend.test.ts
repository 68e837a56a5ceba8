/**
 * The QEMU backend against real QEMU (TCG here), the real agent and the real shell pack.
 * Kept small: every boot costs seconds of emulated CPU on CI's two shared cores.
 */
import assert from 'node:assert/strict';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import type { Backend } from '../../src/core/backend.js';
import { KilnError } from '../../src/core/errors.js';
import { isAlive, type QemuFixture, qemuProcessesUnder, setup, sh, skipReason, spec } from './fixture.js';

const skip = await skipReason();
const READY = { readyTimeoutMs: 60_000 };

describe('qemu backend', { skip, timeout: 240_000 }, () => {
  let f: QemuFixture;
  let warm: Backend | undefined;
  before(async () => {
    f = await setup();
  });
  // The template runs the pack's command once before its snapshot; what it leaves in /tmp and
  // /workspace must be gone in the clones (the marker in /dev/shm shows it ran).
  const run = { fileName: 'main.sh', command: ['sh', '-c', 'touch /tmp/warm-tmp /workspace/warm-ws && mkdir /tmp/warm-dir && echo "$0" > /dev/shm/warmed', '{file}'] };
  const specOf = (id: string) => ({ ...spec(f, id), pack: { ...f.pack, run } });
  after(async () => {
    await f?.cleanup();
  });

  it('cold-boots, runs `echo hi` as uid 1000, and destroy leaves no process or file', async () => {
    const backend = f.backend({ templates: false });
    const sb = await backend.create(spec(f, 'cold1'), READY);
    const pid = sb.details.pid as number;
    try {
      assert.equal(typeof sb.details.bootMs, 'number');
      // Each boot step's end, in order (core/steps.ts); the jail step exists only as root.
      const steps = sb.details.steps as Record<string, number>;
      assert.deepEqual(Object.keys(steps), ['dir', ...(process.getuid?.() === 0 ? ['jail'] : []), 'spawn', 'ctl', 'hello']);
      assert.deepEqual(
        Object.values(steps),
        Object.values(steps).sort((x, y) => x - y),
      );
      if (process.getuid?.() === 0) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        assert.doesNotMatch(status, /^Uid:\s+0\s/m, 'QEMU running user code must not stay root');
      }
      assert.equal(sb.details.accel, (await backend.probe()).info?.accel);
      const r = await sh(sb, 'echo hi; id -u');
      assert.deepEqual(r, { stdout: 'hi\n1000\n', stderr: '', exitCode: 0 });
      assert.ok(((await sb.usage()).memoryBytes ?? 0) > 0);
    } finally {
      await sb.destroy();
    }
    assert.equal(await isAlive(pid), false);
    await assert.rejects(stat(`${f.runDir}/qemu/vms/cold1`), { code: 'ENOENT' });
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
    await sb.destroy(); // idempotent
  });

  it('shows the guest as many CPUs as the limit, a fraction rounded up (-smp), to nproc and sysconf alike', async () => {
    const backend = f.backend({ templates: false });
    for (const [cpus, want] of [
      [0.5, 1],
      [1.5, 2],
    ] as const) {
      const sb = await backend.create(spec(f, `smp${want}`, { cpus }), READY);
      try {
        const r = await sh(sb, 'nproc; getconf _NPROCESSORS_ONLN; grep -c ^processor /proc/cpuinfo');
        assert.deepEqual(r, { stdout: `${want}\n${want}\n${want}\n`, stderr: '', exitCode: 0 }, `cpus ${cpus}`);
      } finally {
        await sb.destroy();
      }
    }
  });

  it('clones of one template are isolated, reseeded, on the host clock, and start unused after the warm-up', async () => {
    const backend = f.backend();
    warm = backend;
    const [a, b] = [await backend.create(specOf('clone-a'), READY), await backend.create(specOf('clone-b'), READY)];
    try {
      assert.ok(a.details.cloneOf, 'the sandbox should be a template clone');
      assert.equal(a.details.cloneOf, b.details.cloneOf);
      assert.equal(typeof a.details.restoreMs, 'number');
      // A clone's marks: from a spare (adopt, cont, hello) or a fresh QEMU restoring the state.
      const marks = Object.keys(a.details.steps as object).filter((k) => k !== 'spareWait');
      assert.ok(marks.join() === 'adopt,cont,hello' || /^dir,(jail,)?spawn,qmp,ctl,ctlAccepted,caps,incoming,migrated,cont,hello$/.test(marks.join()), marks.join());
      assert.deepEqual(await sh(a, 'cat /dev/shm/warmed; ls -A /tmp /workspace'), { stdout: '/tmp/.kiln-warmup/main.sh\n/tmp:\n\n/workspace:\n', stderr: '', exitCode: 0 });

      assert.equal((await sh(a, 'echo secret > /workspace/only-a && cat /workspace/only-a')).stdout, 'secret\n');
      assert.equal((await sh(b, 'test -e /workspace/only-a; echo $?')).stdout, '1\n');

      const rand = 'head -c 200 /dev/urandom | od -An -tx1 | tr -d " \\n"';
      const [ra, rb] = [(await sh(a, rand)).stdout, (await sh(b, rand)).stdout];
      assert.equal(ra.length, 400);
      assert.notEqual(ra, rb);

      for (const sb of [a, b]) {
        const { agentNowMs } = await sb.agent.ping();
        assert.ok(Math.abs(agentNowMs - Date.now()) < 1000, `guest clock off by ${agentNowMs - Date.now()} ms`);
      }
    } finally {
      await Promise.all([a.destroy(), b.destroy()]);
    }
    // The template's spare, started ahead for the next clone, stays.
    assert.deepEqual(await qemuProcessesUnder(f.runDir, { idleSpares: false }), []);
  });

  it('cold-boots instead when the template files have vanished', async () => {
    assert.ok(warm, 'runs after the clone test');
    for (const name of await readdir(f.shmDir)) await rm(`${f.shmDir}/${name}`, { force: true });
    const sb = await warm.create(specOf('fallback'), READY);
    try {
      assert.equal(sb.details.cloneOf, undefined);
      assert.equal(typeof sb.details.bootMs, 'number');
      assert.equal((await sh(sb, 'echo ok')).stdout, 'ok\n');
    } finally {
      await sb.destroy();
    }
  });

  it('reports a guest that fails at boot as BOOT_FAILED with the kernel panic from the console', async () => {
    const backend = f.backend();
    const err = await backend.create(spec(f, 'panics', { backendOptions: { bootArgs: 'kiln.panic=1' } }), READY).then(
      () => assert.fail('create should fail'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof KilnError);
    assert.equal(err.code, 'BOOT_FAILED');
    assert.match(err.message, /kiln\.panic=1/);
    assert.match(err.message, /Kernel panic - not syncing/);
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
    await assert.rejects(stat(`${f.runDir}/qemu/vms/panics`), { code: 'ENOENT' });
  });

  it('kills a guest that does not answer in time (watchdog)', async () => {
    const backend = f.backend({ templates: false });
    const t0 = Date.now();
    await assert.rejects(backend.create(spec(f, 'slow'), { readyTimeoutMs: 1200 }), (e: unknown) => {
      assert.ok(e instanceof KilnError);
      assert.equal(e.code, 'BOOT_FAILED');
      assert.match(e.message, /did not answer within \d+ ms and was killed/);
      return true;
    });
    assert.ok(Date.now() - t0 < 10_000);
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
  });

  it('close() aborts a create under way and leaves no QEMU behind', async () => {
    const backend = f.backend({ templates: false });
    const creating = backend.create(spec(f, 'closing'), READY);
    creating.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300)); // QEMU is up, the guest still booting
    await backend.close();
    const outcome = await creating.then(
      (sb) => `created ${sb.id}`,
      (e: KilnError) => e.code,
    );
    assert.ok(['TIMEOUT', 'SHUTTING_DOWN', 'BOOT_FAILED'].includes(outcome), outcome);
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
    await assert.rejects(stat(`${f.runDir}/qemu/vms/closing`), { code: 'ENOENT' });
    await assert.rejects(backend.create(spec(f, 'after'), READY), { code: 'SHUTTING_DOWN' });
  });

  it('rejects unknown backendOptions before booting anything', async () => {
    const backend = f.backend();
    await assert.rejects(backend.create(spec(f, 'opts', { backendOptions: { vcpuPinning: true } }), READY), { code: 'UNSUPPORTED_OPTION' });
  });

  it('scan() kills the VMs a crashed service left behind and removes their files', async () => {
    const crashed = f.backend({ templates: false });
    const sb = await crashed.create(spec(f, 'orphan'), READY);
    const pid = sb.details.pid as number;
    // A fresh service instance on the same runDir knows nothing of `sb`.
    const report = await f.backend({ templates: false }).scan();
    assert.ok(
      report.removed.some((l) => l.includes(`pid ${pid}`)),
      report.removed.join('\n'),
    );
    assert.equal(await isAlive(pid), false);
    await assert.rejects(stat(`${f.runDir}/qemu/vms/orphan`), { code: 'ENOENT' });
    await sb.destroy();
  });
});
