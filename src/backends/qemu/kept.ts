/**
 * What lets a QEMU sandbox outlive the service: its VM folder (<runDir>/qemu/vms/<id>) holds the
 * QMP, control (agent) and console sockets QEMU listens on, and `kept.json`, the record a later
 * start reads to take the VM over (reattachVm). The record is written once the sandbox is ready
 * (so a SIGKILL of the service keeps it too) and goes with the folder when the VM is deleted; a
 * folder without one (a start cut short) is the start-up scan's.
 */
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { CleanupStack } from '../../core/cleanup.js';
import { roundMs } from '../../core/steps.js';
import { AgentClient } from '../../protocol/agent-client.js';
import { vmPaths } from './cmdline.js';
import type { VmJail, VmmJails } from './jail.js';
import { QemuProcess } from './process.js';
import { QmpClient } from './qmp.js';
import type { QemuMachineFacts } from './sandbox.js';
import { QEMU_STEP, type RunningVm, untilExit } from './vm.js';

export const KEPT_FILE = 'kept.json';
const REATTACH_TIMEOUT_MS = 10_000;

export interface KeptVm {
  id: string;
  /** QEMU's host pid and start time (/proc/<pid>/stat field 22): a reused pid is not this VM. */
  pid: number;
  start: string;
  /** Its bwrap processes (the outer one, the namespace's init) when jailed. */
  wrapperPids: number[];
  /** The jail's uid and cgroup name (a spare's id when the VM started as one); absent: QEMU runs unjailed. */
  jail?: { uid: number; name: string };
  pack: { name: string; hash: string; imagePath: string };
  /**
   * The host name of its TAP when it has a NIC: the spawn's `kq…` until connectNetwork renames it,
   * then the network manager's (the record is written again then), which the reattached VM keeps.
   */
  tap?: string;
  /** A workspace VM's drives: its upper image is flushed before the VM is stopped. */
  workspace?: { lowerImage: string; upperImage: string };
  /** What saveMachine answers (absent for a workspace VM, which cannot be saved). */
  facts?: QemuMachineFacts;
  /** GET /v1/sandboxes/:id's details at the start (pid, accel, bootMs or restoreMs, cloneOf, …). */
  details: Record<string, unknown>;
}

export async function saveKept(dir: string, r: KeptVm): Promise<void> {
  const file = join(dir, KEPT_FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(r), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/** Every VM folder's record; an unreadable one comes back as `{id, error}`. Folders without one are not listed. */
export async function listKept(vmsDir: string): Promise<{ records: KeptVm[]; unreadable: { id: string; error: string }[] }> {
  const records: KeptVm[] = [];
  const unreadable: { id: string; error: string }[] = [];
  for (const id of await readdir(vmsDir).catch(() => [] as string[])) {
    const text = await readFile(join(vmsDir, id, KEPT_FILE), 'utf8').catch((e: NodeJS.ErrnoException) => (e.code === 'ENOENT' ? undefined : e));
    if (text === undefined) continue;
    try {
      if (text instanceof Error) throw text;
      const r = JSON.parse(text) as KeptVm;
      if (r.id !== id || !Number.isInteger(r.pid) || typeof r.start !== 'string') throw new Error('it does not name this VM');
      records.push(r);
    } catch (e) {
      unreadable.push({ id, error: (e as Error).message });
    }
  }
  return { records, unreadable };
}

/**
 * Takes over the VM of `r` left running by an earlier run of the service: the same QEMU (pid and
 * start time), its jail's uid and cgroup held again, QMP answering (a save cut short by the
 * service's end left it stopped: it runs on), and the agent's handshake on a new control
 * connection. Throws when the VM is gone or does not answer, after removing what is left of it
 * (the process, the cgroup, the folder).
 */
export async function reattachVm(r: KeptVm, dir: string, jails: VmmJails | undefined): Promise<RunningVm> {
  const t0 = performance.now();
  const paths = vmPaths(dir);
  const cleanup = new CleanupStack();
  cleanup.push(QEMU_STEP.makeDir, () => rm(dir, { recursive: true, force: true }));
  const proc = QemuProcess.adopt(r.pid, r.start, r.wrapperPids, paths.conSock);
  try {
    let jail: VmJail | undefined;
    if (r.jail && jails) {
      jail = await jails.adopt(r.jail.name, r.jail.uid, proc ? [...r.wrapperPids, r.pid] : []).catch(async (e: Error) => {
        await proc?.stop();
        throw new Error(`its jail cannot be taken over (${e.message})`);
      });
      cleanup.push(QEMU_STEP.jail, () => jail!.release());
    }
    if (!proc) throw new Error('its QEMU ended while the service was not running');
    cleanup.push(QEMU_STEP.spawn, () => proc.stop());
    const qmp = await untilExit(proc, QmpClient.connect(paths.qmpSock, { timeoutMs: REATTACH_TIMEOUT_MS }));
    let continued = false;
    try {
      const st = (await untilExit(proc, qmp.execute('query-status'))) as { status: string; running: boolean };
      if (!st.running && (st.status === 'paused' || st.status === 'postmigrate')) {
        await untilExit(proc, qmp.execute('cont'));
        continued = true;
      } else if (!st.running) throw new Error(`its guest is not running (QEMU status ${st.status})`);
    } finally {
      qmp.close();
    }
    // A guest that was stopped has a clock behind by the stop: the hello's sync sets it.
    const agent = await hello(proc, paths.ctlSock, continued).catch((e: Error) => {
      throw new Error(`its agent did not answer (${e.message})`);
    });
    cleanup.push(QEMU_STEP.hello, () => agent.close());
    return { proc, agent, paths, readyMs: roundMs(performance.now() - t0), steps: {}, cleanup, jail, ...(r.tap ? { tap: r.tap } : {}) };
  } catch (e) {
    await cleanup.run().catch(() => undefined);
    throw e;
  }
}

/**
 * The protocol hello on a new control connection. QEMU drops a port event the guest has no
 * buffer for (seen: the service killed and the VM stopped before the guest took in the hang-up):
 * the guest then never hears of the new host. A connection not answered in a second (then two,
 * four…) is closed and made again, which sends the events anew.
 */
async function hello(proc: QemuProcess, path: string, sync: boolean): Promise<AgentClient> {
  const deadline = Date.now() + REATTACH_TIMEOUT_MS;
  for (let attemptMs = 1000; ; attemptMs *= 2) {
    const ms = Math.max(1, Math.min(attemptMs, deadline - Date.now()));
    const ctl = await untilExit(proc, connectOnce(path));
    try {
      return await untilExit(proc, AgentClient.connect({ readable: ctl, writable: ctl, destroy: () => ctl.destroy() }, { timeoutMs: ms, signal: AbortSignal.timeout(ms), sync }));
    } catch (e) {
      ctl.destroy();
      if (Date.now() >= deadline || !proc.alive) throw e;
    }
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.removeAllListeners('error');
      s.on('error', () => undefined); // the agent client sees the close
      resolve(s);
    });
    s.once('error', reject);
  });
}
