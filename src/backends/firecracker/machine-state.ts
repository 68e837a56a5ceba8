/**
 * A running Firecracker VM's whole state saved for a pause or a named snapshot, through its API:
 * PATCH /vm Paused, PUT /snapshot/create (Full) into the VM's own snapshot folder, the two files
 * moved out, then PATCH /vm Resumed (snapshot) or nothing (pause: the VM is stopped for good).
 * The output names differ from VM_FILES.vmstate/memory: in a template clone those are links to
 * the template's files, which a snapshot must never write through. A restore is a clone's start
 * from these files instead of a template's (backend.ts restoreMachine).
 */
import { copyFile, mkdir, rename, rm, stat } from 'node:fs/promises';
import type { VmContext } from './vm-steps.js';

/** Where Firecracker writes a save, inside the VM's (chowned) snapshot folder. */
const OUT = { vmstate: 'snapshot/saved-vmstate', memory: 'snapshot/saved-memory' } as const;
/** The saved files in the folder the core hands out. */
export const SAVED = { vmstate: 'vmstate', memory: 'memory' } as const;

export async function saveFirecrackerState(ctx: VmContext, dir: string, o: { keepRunning: boolean; signal?: AbortSignal }): Promise<{ stateBytes: number; saveMs: number }> {
  const t0 = performance.now();
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await ctx.api.pauseVm({ signal: o.signal });
  try {
    await ctx.api.createSnapshot({ snapshot_type: 'Full', snapshot_path: ctx.vm(OUT.vmstate), mem_file_path: ctx.vm(OUT.memory) }, { signal: o.signal });
    await moveFile(ctx.host(OUT.vmstate), `${dir}/${SAVED.vmstate}`);
    await moveFile(ctx.host(OUT.memory), `${dir}/${SAVED.memory}`);
  } catch (e) {
    await rm(ctx.host(OUT.vmstate), { force: true });
    await rm(ctx.host(OUT.memory), { force: true });
    throw e;
  } finally {
    if (o.keepRunning) await ctx.api.resumeVm({ signal: o.signal });
    // A paused guest cannot react to Ctrl+Alt+Del: the destroy that follows kills it directly.
    else ctx.booted = false;
  }
  const [a, b] = await Promise.all([stat(`${dir}/${SAVED.vmstate}`), stat(`${dir}/${SAVED.memory}`)]);
  return { stateBytes: a.size + b.size, saveMs: Math.round(performance.now() - t0) };
}

async function moveFile(from: string, to: string): Promise<void> {
  try {
    await rename(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(from, to);
    await rm(from, { force: true });
  }
}
