/**
 * QEMU sandboxes outlive the service (bin/kiln serve, KILN_BACKEND=qemu): a graceful stop and a
 * SIGKILL each leave the VM running, and the next start reattaches it under its id with its files
 * and background processes; a VM killed while the service is down is reported lost and its
 * leftovers removed; a reattached VM pauses and resumes; a delete, and a stop with
 * KILN_STOP_SANDBOXES_ON_EXIT=1, leave no QEMU, socket, folder or cgroup.
 * KILN_TEST_QEMU_RESTART_EXTRA=N keeps N more VMs across the SIGKILL (to measure reattach per VM).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { KilnClient } from '../../sdk/src/index.js';
import { findOrphans } from '../../src/backends/qemu/scan.js';
import { vmmCgroupName } from '../../src/core/vmm-identities.js';
import { cgroupChildren, exited, running, until } from '../parity/leaks.js';
import { freePort, spawnService, untilHealthy } from '../parity/service-process.js';
import { skipReason } from './fixture.js';

const ENV = { KILN_BACKEND: 'qemu', KILN_STOP_SANDBOXES_ON_EXIT: '0' };
const EXTRA = Number(process.env.KILN_TEST_QEMU_RESTART_EXTRA ?? 0);
const skip = process.getuid?.() === 0 ? await skipReason() : 'needs root';

describe('qemu sandboxes survive a restart of the service', { skip, timeout: 240_000 }, () => {
  it('SIGTERM and SIGKILL keep the VM (file, background process, exec); a VM dead meanwhile is lost; delete leaves nothing', async () => {
    const base = await mkdtemp(join(tmpdir(), 'kiln-qr-'));
    await chmod(base, 0o755);
    const runDir = join(base, 'run');
    const qemuRunDir = join(runDir, 'qemu');
    const cgroups = vmmCgroupName('kiln-vmm', runDir);
    const port = await freePort();
    const client = new KilnClient({ baseUrl: `http://127.0.0.1:${port}` });
    let svc = spawnService(runDir, port, ENV);
    try {
      await untilHealthy(client, svc);
      const sb = await client.sandboxes.create({ pack: 'shell', labels: { k: 'v' } });
      const pid = sb.details.pid as number;
      await client.sandboxes.exec(sb.id, { cmd: 'echo kept > /workspace/f; sleep 1000 >/dev/null 2>&1 & echo $! > /tmp/bg.pid' });
      const check = async (): Promise<void> => {
        const r = await client.sandboxes.exec(sb.id, { cmd: 'cat /workspace/f; kill -0 $(cat /tmp/bg.pid) && echo bg-alive' });
        assert.equal(r.stdout, 'kept\nbg-alive\n');
      };

      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0);
      assert.ok(running(pid), 'the VM runs on after a graceful stop');
      svc = spawnService(runDir, port, ENV);
      await untilHealthy(client, svc);
      const listed = await client.sandboxes.list();
      assert.deepEqual(
        listed.map((s) => [s.id, s.labels]),
        [[sb.id, { k: 'v' }]],
      );
      await check();
      const ms1 = /"reattached":1[^\n]*"ms":(\d+)/.exec(svc.stderr())?.[1];
      // A second VM from this run's template: its spare QEMU is running when the service is killed.
      const doomed = await client.sandboxes.create({ pack: 'shell' });
      const doomedPid = doomed.details.pid as number;
      const extras: string[] = [];
      for (let i = 0; i < EXTRA; i++) extras.push((await client.sandboxes.create({ pack: 'shell' })).id);
      await until(() => svc.stderr().includes('spare ready'), 10_000);

      svc.child.kill('SIGKILL');
      await exited(svc.child);
      assert.ok(running(pid), 'the VM runs on after the service is killed');
      process.kill(doomedPid, 'SIGKILL'); // dies while the service is down
      await until(() => !running(doomedPid), 5000);
      svc = spawnService(runDir, port, { ...ENV, KILN_STOP_SANDBOXES_ON_EXIT: '1' });
      await untilHealthy(client, svc);
      assert.deepEqual((await client.sandboxes.list()).map((s) => s.id).sort(), [sb.id, ...extras].sort());
      await check();
      const log = svc.stderr();
      assert.match(log, new RegExp(`${doomed.id}[^\\n]*ended while the service was not running`), 'the dead VM is reported lost with the reason');
      assert.ok(!existsSync(join(qemuRunDir, 'vms', doomed.id)), "the lost VM's folder is removed");
      assert.ok(!cgroupChildren(cgroups).includes(doomed.id), "the lost VM's cgroup is removed");
      assert.match(log, /killed orphaned qemu kiln-sp-/, "the killed service's spare (no record) is the scan's");
      const ms2 = new RegExp(`"reattached":${1 + EXTRA}[^\n]*"ms":(\\d+)`).exec(log)?.[1];
      process.stderr.write(`# reattach: ${ms1} ms for 1 VM after SIGTERM, ${ms2} ms for ${1 + EXTRA} (+1 lost) after SIGKILL\n`);

      // A reattached VM saves its machine like any other (QMP again on its socket): pause, resume.
      assert.equal((await client.sandboxes.pause(sb.id)).processesKept, true);
      await until(() => !running(pid), 5000);
      assert.ok(!running(pid), "the paused VM's QEMU is gone");
      const resumed = await client.sandboxes.resume(sb.id);
      await check();
      const pid2 = resumed.details.pid as number;

      await client.sandboxes.delete(sb.id);
      await until(() => !running(pid2), 5000);
      assert.ok(!running(pid2), 'no QEMU left');
      assert.ok(!existsSync(join(qemuRunDir, 'vms', sb.id)), 'no VM folder (sockets, record) left');
      assert.ok(!cgroupChildren(cgroups).includes(sb.id), 'no VM cgroup left');

      // This run was started with KILN_STOP_SANDBOXES_ON_EXIT=1: its stop deletes its VMs, the reattached one's too.
      const last = await client.sandboxes.create({ pack: 'shell' });
      svc.child.kill('SIGTERM');
      assert.equal(await exited(svc.child), 0);
      assert.ok(!running(last.details.pid as number), 'a stop with KILN_STOP_SANDBOXES_ON_EXIT=1 deletes the VMs');
      assert.ok(!existsSync(join(qemuRunDir, 'vms', last.id)));
      assert.deepEqual(await findOrphans(qemuRunDir, new Set()), [], 'no QEMU of this run dir left (spares, templates)');
      assert.deepEqual(cgroupChildren(cgroups), []);
      assert.ok(!existsSync(`/dev/shm/kiln-qemu-${createHash('sha256').update(runDir).digest('hex').slice(0, 10)}`), 'no template RAM file left');
    } finally {
      if (svc.child.exitCode === null && svc.child.signalCode === null) svc.child.kill('SIGKILL');
      await exited(svc.child);
      if ((await findOrphans(qemuRunDir, new Set())).length || cgroupChildren(cgroups).length) {
        // A failed run: one more start reattaches (or scans away) what is left, and its stop deletes it.
        const last = spawnService(runDir, port, { ...ENV, KILN_STOP_SANDBOXES_ON_EXIT: '1' });
        await untilHealthy(client, last).catch(() => undefined);
        last.child.kill('SIGTERM');
        await exited(last.child);
      }
      await rm(base, { recursive: true, force: true });
    }
  });
});
