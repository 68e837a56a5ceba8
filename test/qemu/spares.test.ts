/**
 * Spare QEMUs: a clone is served from a pre-started spare, the spare is replaced (also when it
 * dies), scan() tells a live service's spares from leftovers, and close leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isAlive, type QemuFixture, qemuProcessesUnder, setup, sh, skipReason, spec } from './fixture.js';

const skip = await skipReason();
const READY = { readyTimeoutMs: 60_000 };

async function spareIds(runDir: string): Promise<string[]> {
  return (await readdir(`${runDir}/qemu/spares`).catch(() => [] as string[])).sort();
}

async function waitFor<T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await get();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${JSON.stringify(v)})`);
    await sleep(50);
  }
}

/** The pid of the QEMU started as spare `id` (its `-name kiln-<id>`), once it runs. */
async function sparePid(runDir: string, id: string): Promise<number> {
  return waitFor(
    `the pid of spare ${id}`,
    async () => {
      for (const pid of await qemuProcessesUnder(runDir)) {
        const argv = (await readFile(`/proc/${pid}/cmdline`).catch(() => Buffer.alloc(0))).toString().split('\0');
        // QEMU itself, not the bwrap processes of its jail (their argv holds QEMU's too).
        if (argv.includes(`kiln-${id},process=kiln-${id}`) && !argv[0]!.endsWith('bwrap')) return pid;
      }
      return 0;
    },
    (pid) => pid > 0,
  );
}

describe('qemu spares', { skip, timeout: 180_000 }, () => {
  let f: QemuFixture;
  before(async () => {
    f = await setup();
  });
  after(async () => {
    await f?.cleanup();
  });

  it('serves clones from a spare, replaces it (also when it dies), and close leaves no qemu and nothing in /dev/shm', async () => {
    // The default RAM directory, so the check below is on the real /dev/shm.
    const backend = f.backend({ shmDir: undefined });
    const shmName = `kiln-qemu-${createHash('sha256').update(f.runDir).digest('hex').slice(0, 10)}`;
    const first = await backend.create(spec(f, 'sp-first'), READY);
    assert.ok(first.details.cloneOf, 'the first sandbox should be a template clone');
    assert.equal(first.details.spare, undefined, 'no spare exists before the template');
    assert.ok((await readdir('/dev/shm')).includes(shmName));

    const [s1] = await waitFor(
      'the first spare',
      () => spareIds(f.runDir),
      (d) => d.length === 1,
    );
    const s1Pid = await sparePid(f.runDir, s1!);
    // The running service's own scan must not take its spare for a leftover.
    assert.deepEqual((await backend.scan()).removed, []);
    assert.equal(await isAlive(s1Pid), true);

    const a = await backend.create(spec(f, 'sp-a'), READY);
    assert.equal(a.details.spare, s1, 'the clone should be served from the spare');
    assert.equal(a.details.pid, s1Pid);
    assert.equal(a.details.cloneOf, first.details.cloneOf);
    assert.equal(typeof (a.details.steps as Record<string, number>).hello, 'number');
    // The spare's directory (and its bound sockets) became the sandbox's.
    await stat(`${f.runDir}/qemu/vms/sp-a/ctl.sock`);
    if (process.getuid?.() === 0) {
      assert.doesNotMatch(await readFile(`/proc/${s1Pid}/status`, 'utf8'), /^Uid:\s+0\s/m, 'a spare must be confined like any clone');
    }
    assert.deepEqual(await sh(a, 'echo ok; id -u'), { stdout: 'ok\n1000\n', stderr: '', exitCode: 0 });
    const { agentNowMs } = await a.agent.ping();
    assert.ok(Math.abs(agentNowMs - Date.now()) < 1000, `guest clock off by ${agentNowMs - Date.now()} ms`);

    const [s2] = await waitFor(
      'a replacement spare',
      () => spareIds(f.runDir),
      (d) => d.length === 1 && d[0] !== s1,
    );
    const b = await backend.create(spec(f, 'sp-b'), READY);
    assert.equal(b.details.spare, s2);
    const rand = 'head -c 64 /dev/urandom | od -An -tx1 | tr -d " \\n"';
    assert.notEqual((await sh(a, rand)).stdout, (await sh(b, rand)).stdout);

    // A spare that dies idle is replaced.
    const [s3] = await waitFor(
      'a third spare',
      () => spareIds(f.runDir),
      (d) => d.length === 1 && d[0] !== s2,
    );
    process.kill(await sparePid(f.runDir, s3!), 'SIGKILL');
    const [s4] = await waitFor(
      'the dead spare to be replaced',
      () => spareIds(f.runDir),
      (d) => d.length === 1 && d[0] !== s3,
    );
    await sparePid(f.runDir, s4!);

    await a.destroy();
    await backend.close();
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
    assert.ok(!(await readdir('/dev/shm')).includes(shmName), `/dev/shm/${shmName} should be gone`);
    assert.deepEqual(await spareIds(f.runDir), []);
    assert.equal(await isAlive(b.details.pid as number), false);
  });

  it('scan() of a restarted service kills the spares a crashed one left behind', async () => {
    const crashed = f.backend();
    const sb = await crashed.create(spec(f, 'sp-orphan'), READY);
    const [s] = await waitFor(
      'a spare',
      () => spareIds(f.runDir),
      (d) => d.length === 1,
    );
    const pid = await sparePid(f.runDir, s!);
    const report = await f.backend().scan();
    assert.ok(
      report.removed.some((l) => l.includes(`pid ${pid}`)),
      report.removed.join('\n'),
    );
    assert.equal(await isAlive(pid), false);
    assert.ok(!(await spareIds(f.runDir)).includes(s!));
    await sb.destroy();
    await crashed.close();
    assert.deepEqual(await qemuProcessesUnder(f.runDir), []);
  });
});
