/**
 * A running VM's whole state (RAM, devices; the root disk is the read-only pack image and the
 * guest's writes live in its RAM) saved to a file for a pause or a named snapshot, through QEMU's
 * own migration: `stop`, `migrate` into a Unix socket the host listens on, and `cont` (snapshot)
 * or nothing (pause: the VM is stopped for good). A sandbox QEMU may not spawn (`exec:` is
 * denied by its seccomp filter) and QEMU 7.2 takes an outgoing `fd:` only as an SCM_RIGHTS
 * monitor fd, so the host end is a socket in the VM's migration folder, which a jailed QEMU sees
 * at JAIL_MIG_DIR in its chroot. A restore is a clone's start from this file instead of a
 * template's (vm.ts, `restoreFrom`); the capabilities match (x-ignore-shared on both sides).
 */
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, rm, stat } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { KilnError } from '../../core/errors.js';
import { JAIL_MIG_DIR } from './jail.js';
import { QmpClient } from './qmp.js';
import { type RunningVm, untilExit, waitMigration } from './vm.js';

/** The saved state's file inside the folder it is given. */
export const STATE_FILE = 'state';
const SAVE_TIMEOUT_MS = 120_000;

export async function saveVmState(vm: RunningVm, dir: string, o: { keepRunning: boolean; jailed: boolean }): Promise<{ stateBytes: number; saveMs: number }> {
  const t0 = performance.now();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // Unjailed, QEMU may still run as another user (runAsUser): it must pass through the VM's folder.
  if (!o.jailed) await chmod(vm.paths.dir, 0o711);
  const sockPath = `${vm.paths.migDir}/out.sock`;
  await rm(sockPath, { force: true });
  const file = `${dir}/${STATE_FILE}`;
  let received: Promise<void> | undefined;
  const server = createServer({ allowHalfOpen: false }, (s: Socket) => {
    if (received) return void s.destroy(); // one stream only
    received = pipeline(s, createWriteStream(file, { mode: 0o600 }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(sockPath, () => resolve());
  });
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  let qmp: QmpClient | undefined;
  let stopped = false;
  try {
    // QEMU runs as the VM's own uid: it must be able to connect.
    await chmod(sockPath, 0o666);
    qmp = await untilExit(vm.proc, QmpClient.connect(vm.paths.qmpSock, { timeoutMs: 5000 }));
    await untilExit(vm.proc, qmp.execute('stop'));
    stopped = true;
    // As a clone loads its state (vm-steps.ts restoreSteps): the stream must be read with the same capability.
    await untilExit(vm.proc, qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] }));
    await untilExit(vm.proc, qmp.execute('migrate', { uri: `unix:${o.jailed ? `${JAIL_MIG_DIR}/out.sock` : sockPath}` }));
    await waitMigration(qmp, vm.proc, deadline);
    if (!received) throw new Error('QEMU reported the migration complete but never connected');
    await received;
    if (o.keepRunning) {
      await untilExit(vm.proc, qmp.execute('cont'));
      stopped = false;
    }
    const st = await stat(file);
    return { stateBytes: st.size, saveMs: Math.round(performance.now() - t0) };
  } catch (e) {
    // A snapshot that failed leaves the sandbox as it was: running.
    if (stopped && o.keepRunning) await qmp?.execute('cont').catch(() => undefined);
    await rm(file, { force: true });
    throw new KilnError('INTERNAL', `saving the VM's state failed: ${(e as Error).message}`, { cause: e });
  } finally {
    qmp?.close();
    server.close();
    await rm(sockPath, { force: true });
  }
}
