/**
 * What lets a Firecracker sandbox outlive the service (without the jailer): its VM folder
 * (<runDir>/firecracker/vms/<id>) keeps the API socket and the vsock socket Firecracker listens
 * on, and `kept.json`, the record a later start reads to take the VM over (reattachFirecracker).
 * Written once the sandbox is ready, gone with the folder. Jailed VMs are not kept: the jailer's
 * chroot, cgroups and network namespace are not taken over yet.
 */
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CleanupStack } from '../../core/cleanup.js';
import { killLeftovers } from '../../core/kill-ladder.js';
import { processStart, processStartSync } from '../../core/proc-stat.js';
import { reconnectAgent } from './agent-link.js';
import type { UnjailedConfiner } from './confine.js';
import { deleteNetns } from './netns.js';
import { AdoptedVmm, type Launcher, stopVmm } from './process.js';
import { FC_STEP, VM_FILES, VmContext, type VmSpec } from './vm-steps.js';

export const KEPT_FILE = 'kept.json';
const REATTACH_TIMEOUT_MS = 10_000;

/** The VM's spec as far as it is data (no launcher, confinement or jailer). */
export type KeptSpec = Omit<VmSpec, 'launcher' | 'confine' | 'jail' | 'snapshot'>;

export interface KeptFirecracker {
  id: string;
  /** Firecracker's host pid and start time: a reused pid is not this VM. */
  pid: number;
  start: string;
  /** bwrap and its namespace init, when confined. */
  wrapperPids: number[];
  confine?: { uid: number; name: string };
  spec: KeptSpec;
  details: Record<string, unknown>;
  /** What saveMachine answers; absent: the VM cannot be saved (a NIC). */
  machine?: Record<string, unknown>;
}

export async function saveKept(r: KeptFirecracker): Promise<void> {
  const file = join(r.spec.dir, KEPT_FILE);
  await writeFile(`${file}.tmp`, JSON.stringify(r), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

export async function listKept(vmsDir: string): Promise<KeptFirecracker[]> {
  const out: KeptFirecracker[] = [];
  for (const id of await readdir(vmsDir).catch(() => [] as string[])) {
    const text = await readFile(join(vmsDir, id, KEPT_FILE), 'utf8').catch(() => undefined);
    if (text === undefined) continue;
    try {
      const r = JSON.parse(text) as KeptFirecracker;
      if (r.id === id && Number.isInteger(r.pid) && r.spec?.dir === join(vmsDir, id)) out.push(r);
    } catch {
      /* unreadable: the scan removes the folder */
    }
  }
  return out;
}

/**
 * Takes over the VM of `r`: the same Firecracker (pid and start time), its confinement's uid and
 * cgroup held again, its API answering and the agent's hello on a new vsock connection. Throws
 * when it is gone or does not answer, after removing what is left (process, cgroup, folder).
 */
export async function reattachFirecracker(r: KeptFirecracker, confiner: UnjailedConfiner | undefined, launcher: Launcher): Promise<{ ctx: VmContext; cleanup: CleanupStack }> {
  const ctx = new VmContext({ ...r.spec, launcher });
  const cleanup = new CleanupStack();
  const running = processStartSync(r.pid) === r.start;
  try {
    if (r.confine && confiner) {
      ctx.confine = await confiner.adopt(r.confine.name, r.confine.uid, running ? [...r.wrapperPids, r.pid] : []);
      cleanup.push(FC_STEP.confine, () => ctx.confine!.release());
    }
    cleanup.push(FC_STEP.makeVmDir, () => rm(r.spec.dir, { recursive: true, force: true }));
    // Its own network namespace (and the TAP and veth in it) goes after Firecracker.
    const netns = r.spec.netns;
    if (netns) cleanup.push(FC_STEP.createNetns, () => deleteNetns(netns));
    if (!running) throw new Error('its Firecracker ended while the service was not running');
    const proc = new AdoptedVmm(r.pid, r.start);
    ctx.proc = proc;
    ctx.booted = true;
    cleanup.push(FC_STEP.spawn, async () => {
      try {
        await stopVmm(proc, ctx.api, { gracefulMs: r.spec.shutdownGraceMs });
      } finally {
        proc.release();
      }
      await waitGone(r.wrapperPids);
    });
    await ctx.api.describeInstance({ signal: AbortSignal.timeout(REATTACH_TIMEOUT_MS) });
    ctx.agent = await reconnectAgent({ udsPath: ctx.host(VM_FILES.vsock), timeoutMs: REATTACH_TIMEOUT_MS, isAlive: () => ctx.alive() });
    cleanup.push(FC_STEP.agentHandshake, () => ctx.agent?.close());
    return { ctx, cleanup };
  } catch (e) {
    await cleanup.run().catch(() => undefined);
    throw e;
  }
}

/** bwrap's init and bwrap exit after Firecracker; SIGKILLed only if they do not. */
async function waitGone(pids: number[]): Promise<void> {
  for (let t = 0; t < 1000; t += 10) {
    if ((await Promise.all(pids.map((p) => processStart(p)))).every((s) => s === undefined)) return;
    await sleep(10);
  }
  const { stuck } = await killLeftovers(pids, 3000);
  if (stuck.length) throw new Error(`bwrap processes ${stuck.join(', ')} of a Firecracker VM survived SIGKILL`);
}
