/**
 * Pause and resume of a real QEMU microVM (TCG here): a file and the memory of a running process
 * (a background loop's counter goes on from where it was) survive a pause, a resume, and a pause
 * across a service restart; a named snapshot seeds a new VM; no QEMU and no temp folder is left.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestServer, type TestServer } from '../parity/fixture.js';
import { skipReason } from './fixture.js';

/** A loop that counts in memory only and writes the count out each 0.2 s. */
const LOOP = "nohup sh -c 'n=0; while :; do n=$((n+1)); echo $n > /tmp/count; sleep 0.2; done' >/dev/null 2>&1 &";

/** Sandbox QEMUs of this run dir (spares, started ahead for the next create, are not counted). */
function qemusOf(runDir: string): string[] {
  const out = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => /^\s*\d+ qemu-system/.test(l) && l.includes(`${runDir}/qemu/vms/`))
    .map((l) => l.slice(0, 80));
}

describe('pause and resume on qemu', { skip: await skipReason(), timeout: 900_000 }, () => {
  let snapDir: string;
  before(async () => {
    snapDir = await mkdtemp(join(tmpdir(), 'kiln-qsnaps-'));
  });
  after(async () => {
    await rm(snapDir, { recursive: true, force: true });
  });
  const env = () => ({ KILN_BACKEND: 'qemu', KILN_SNAPSHOTS_DIR: snapDir });

  it('keeps a file and a running process across pause and resume, and across a restart', async () => {
    let t: TestServer | undefined = await startTestServer(env());
    let id = '';
    try {
      const kiln = t.client;
      id = (await kiln.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64 })).id;
      await kiln.sandboxes.writeFile(id, '/workspace/a.txt', 'alpha');
      await kiln.sandboxes.exec(id, { cmd: LOOP });
      await sleep(1500);
      const count = async (sid: string) => Number((await t!.client.sandboxes.exec(sid, { cmd: 'cat /tmp/count' })).stdout.trim());
      const before = await count(id);
      assert.ok(before > 0);
      const p = await kiln.sandboxes.pause(id);
      assert.equal(p.processesKept, true);
      console.log(`qemu pause: ${p.pauseMs} ms, ${(p.sizeBytes / 2 ** 20).toFixed(1)} MiB`);
      assert.deepEqual(qemusOf(t.runDir), [], 'a paused sandbox has no QEMU');
      const r = await kiln.sandboxes.resume(id);
      console.log(`qemu resume: ${r.resumeMs} ms`);
      const afterResume = await count(id);
      assert.ok(afterResume >= before, `the loop went on from ${before} (now ${afterResume})`);
      await sleep(1000);
      assert.ok((await count(id)) > afterResume, 'the loop still runs after the resume');
      assert.equal((await kiln.sandboxes.exec(id, { cmd: 'cat /workspace/a.txt' })).stdout, 'alpha');

      // Paused across a restart of the service.
      const c1 = await count(id);
      await kiln.sandboxes.pause(id);
      await t.close();
      t = undefined;
      t = await startTestServer(env());
      assert.equal((await t.client.sandboxes.get(id)).state, 'paused');
      await t.client.sandboxes.resume(id);
      const c2 = await count(id);
      assert.ok(c2 >= c1, `the loop went on after the restart (${c1} -> ${c2})`);
      assert.equal((await t.client.sandboxes.exec(id, { cmd: 'cat /workspace/a.txt' })).stdout, 'alpha');

      // A named snapshot of the running VM seeds a new one with the same memory.
      const ts = performance.now();
      const snap = await t.client.sandboxes.snapshot(id, 'vm-seed');
      assert.equal(snap.kind, 'machine');
      assert.ok((await count(id)) >= c2, 'the source VM runs on after its snapshot');
      const seeded = await t.client.sandboxes.create({ pack: 'shell', fromSnapshot: 'vm-seed' });
      console.log(`qemu snapshot: ${Math.round(performance.now() - ts - seeded.readyMs)} ms, ${(snap.sizeBytes / 2 ** 20).toFixed(1)} MiB; a sandbox from it ready in ${seeded.readyMs} ms`);
      try {
        assert.equal((await t.client.sandboxes.exec(seeded.id, { cmd: 'cat /workspace/a.txt' })).stdout, 'alpha');
        const s1 = await count(seeded.id);
        await sleep(1000);
        assert.ok((await count(seeded.id)) > s1, 'the loop runs in the seeded VM');
      } finally {
        await t.client.sandboxes.delete(seeded.id);
      }
      await t.client.sandboxes.deleteSnapshot('vm-seed');
      await t.client.sandboxes.delete(id);
      id = '';
      assert.deepEqual(qemusOf(t.runDir), [], 'no QEMU left');
      assert.deepEqual(await readdir(join(snapDir, 'paused')), []);
      assert.deepEqual(await readdir(join(snapDir, 'named')), []);
      assert.deepEqual(await readdir(join(snapDir, 'tmp')).catch(() => []), []);
    } finally {
      if (t && id) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t?.close();
    }
  });

  it('pauses and resumes a cold-booted VM (no template: its RAM is not a memory backend)', async () => {
    const t = await startTestServer(env());
    let id = '';
    try {
      // Boot arguments of its own: no template has them, the VM boots cold.
      id = (await t.client.sandboxes.create({ pack: 'shell', memoryMib: 128, diskMib: 64, backendOptions: { bootArgs: 'kiln.test=cold' } })).id;
      assert.equal(typeof (await t.client.sandboxes.get(id)).details.bootMs, 'number');
      await t.client.sandboxes.writeFile(id, '/tmp/cold.txt', 'cold');
      const p = await t.client.sandboxes.pause(id);
      assert.equal(p.processesKept, true);
      await t.client.sandboxes.resume(id);
      const r = await t.client.sandboxes.exec(id, { cmd: 'cat /tmp/cold.txt' });
      assert.equal(r.stdout, 'cold');
      await t.client.sandboxes.delete(id);
      id = '';
      assert.deepEqual(qemusOf(t.runDir), []);
    } finally {
      if (id) await t.client.sandboxes.delete(id).catch(() => undefined);
      await t.close();
    }
  });
});
