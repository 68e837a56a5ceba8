/**
 * One service per run directory (src/core/instance-lock.ts): a second `kiln serve` on the same run
 * directory refuses to start, names the first, and leaves its sandboxes alone (before the lock, its
 * start-up scan removed the first one's cgroups and killed its sandboxes); a holder killed with
 * SIGKILL does not block the next start, which reattaches its sandboxes.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KilnClient } from '../../sdk/src/index.js';
import { InstanceLock, LOCK_FILE } from '../../src/core/instance-lock.js';
import { alive } from '../parity/leaks.js';
import { freePort, type ServeChild, spawnService, untilHealthy } from '../parity/service-process.js';

async function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  await once(child, 'exit');
}

describe('instance lock', () => {
  it('a lock file left by a dead process, by a reused pid, or half-written does not block; a live holder does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-lock-'));
    try {
      const path = join(dir, LOCK_FILE);
      // pid 1 is alive, but its start time is not the one recorded: a reused pid.
      await writeFile(path, JSON.stringify({ pid: 1, startTicks: '1', startedAt: 'then' }));
      const a = await InstanceLock.acquire(dir, 'http://127.0.0.1:1');
      assert.equal(JSON.parse(await readFile(path, 'utf8')).pid, process.pid);
      await assert.rejects(InstanceLock.acquire(dir), new RegExp(`another kiln service \\(pid ${process.pid}, http://127\\.0\\.0\\.1:1, started .*\\) uses the run directory ${dir}: stop it first`));
      await a.release();
      await writeFile(path, '{"pid": 12'); // a holder that died while writing
      const b = await InstanceLock.acquire(dir);
      await b.release();
      assert.equal(await readFile(path, 'utf8').catch(() => 'gone'), 'gone', 'release removes the file');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a second service on the same run directory refuses to start and leaves the first one's sandboxes alone; after SIGKILL the next start succeeds", {
    skip: process.getuid?.() === 0 ? undefined : 'needs root',
    timeout: 180_000,
  }, async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-lock-'));
    await chmod(base, 0o755);
    const runDir = join(base, 'run');
    await mkdir(runDir);
    const [p1, p2] = [await freePort(), await freePort()];
    const c1 = new KilnClient({ baseUrl: `http://127.0.0.1:${p1}` });
    const c2 = new KilnClient({ baseUrl: `http://127.0.0.1:${p2}` });
    const first = spawnService(runDir, p1);
    let third: ServeChild | undefined;
    try {
      await untilHealthy(c1, first);
      const sb = await c1.sandboxes.create({ pack: 'shell' });
      const pid = sb.details.pid as number;

      const second = spawnService(runDir, p2);
      const [code] = (await once(second.child, 'exit')) as [number | null];
      assert.equal(code, 1, second.stderr());
      assert.match(second.stderr(), new RegExp(`another kiln service \\(pid ${first.child.pid}, http://127\\.0\\.0\\.1:${p1}, started [^)]+\\) uses the run directory ${runDir}`));
      assert.ok(alive(pid), "the first service's sandbox survived the second start");
      assert.equal((await c1.sandboxes.exec(sb.id, { cmd: 'echo still here' })).stdout, 'still here\n');

      await stop(first.child, 'SIGKILL');
      third = spawnService(runDir, p2);
      await untilHealthy(c2, third);
      // The sandbox outlived the killed holder: the next start reattaches it.
      assert.equal((await c2.sandboxes.exec(sb.id, { cmd: 'echo reattached' })).stdout, 'reattached\n');
      assert.equal(JSON.parse(await readFile(join(runDir, LOCK_FILE), 'utf8')).pid, third.child.pid, 'the new service holds the lock');
      await stop(third.child); // the harness's services delete their sandboxes at a stop
      assert.equal(third.child.exitCode, 0, third.stderr());
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      assert.equal(alive(pid), false);
      assert.equal(await readFile(join(runDir, LOCK_FILE), 'utf8').catch(() => 'gone'), 'gone', 'a clean stop releases the lock');
    } finally {
      await stop(first.child, 'SIGKILL');
      if (third) await stop(third.child);
      await rm(base, { recursive: true, force: true });
    }
  });
});
