/**
 * Pause, resume and named snapshots, for the manager (manager.ts keeps the sandbox map; this file
 * saves and brings back state). A microVM backend saves its whole machine (memory and disk:
 * processes continue after resume); any other backend keeps the files the sandbox wrote (the
 * writable paths, archived through the agent) and resumes as a fresh sandbox of the same pack and
 * shape with them put back (`processesKept: false`). A paused sandbox holds no admission slot and
 * no memory of its owner's quota; its TTL keeps running (an expired paused sandbox is deleted with
 * its state). Its record lives next to its state, so a restarted service lists and resumes it.
 */
import type { Backend, BackendSandbox, SandboxSpec } from './backend.js';
import { KilnError } from './errors.js';
import type { Owner } from './quotas.js';
import type { Sandbox } from './sandbox.js';
import { loadFiles, type SnapshotFiles, type SnapshotRecord, saveFiles } from './snapshots.js';

export interface PauseResult {
  id: string;
  state: 'paused';
  /** True on microVMs (memory saved); false on the namespace backend (files only). */
  processesKept: boolean;
  pauseMs: number;
  sizeBytes: number;
}

export interface SnapshotInfo {
  name: string;
  kind: 'machine' | 'files';
  backend: string;
  pack: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
  createdAt: string;
  sizeBytes: number;
  /** Whether a sandbox started from it continues the saved processes (machine) or only has the files. */
  processesKept: boolean;
  ownerKeyId?: string;
}

export function snapshotInfo(r: SnapshotRecord): SnapshotInfo {
  return {
    name: r.name,
    kind: r.kind,
    backend: r.backend,
    pack: r.pack,
    cpus: r.cpus,
    memoryMib: r.memoryMib,
    diskMib: r.diskMib,
    createdAt: r.createdAt,
    sizeBytes: r.sizeBytes,
    processesKept: r.kind === 'machine',
    ...(r.ownerKeyId ? { ownerKeyId: r.ownerKeyId } : {}),
  };
}

/** Checks a sandbox can have its state saved now. */
export function checkSavable(sb: Sandbox, what: 'pause' | 'snapshot'): void {
  if (sb.state === 'paused') throw new KilnError('SANDBOX_PAUSED', `sandbox ${sb.id} is paused; resume it with POST /v1/sandboxes/${sb.id}/resume first`);
  if (sb.state !== 'ready') throw new KilnError('SANDBOX_GONE', `sandbox ${sb.id} is ${sb.state}; create a new one`);
  if (sb.workspace) throw new KilnError('UNSUPPORTED_OPTION', `a workspace sandbox cannot ${what}: its changes live in the workspace (approve or reject them); stop it with DELETE instead`);
  if (sb.execsRunning > 0)
    throw new KilnError('SANDBOX_NOT_READY', `sandbox ${sb.id} has ${sb.execsRunning} exec${sb.execsRunning === 1 ? '' : 's'} running; wait for them (or kill them), then ${what}`, {
      details: { execsRunning: sb.execsRunning },
    });
}

/**
 * Saves the sandbox's state into `dir` (a SnapshotFiles.begin() folder) and answers its record
 * (sizeBytes is filled by commit). `keepRunning` false: a machine save stops the VM for good.
 */
export async function saveState(sb: Sandbox, name: string, dir: string, keepRunning: boolean, maxBytes: number): Promise<SnapshotRecord> {
  const base = {
    name,
    backend: sb.backendName,
    pack: sb.packName,
    ...sb.size,
    env: sb.env,
    labels: sb.labels,
    ownerKeyId: sb.owner?.keyId ?? null,
    createdAt: new Date().toISOString(),
    sizeBytes: 0,
  };
  if (sb.inner.saveMachine) {
    const { machine } = await sb.inner.saveMachine(`${dir}/machine`, { keepRunning });
    return { ...base, kind: 'machine', machine };
  }
  return { ...base, kind: 'files', paths: await saveFiles(sb.inner.agent, dir, maxBytes) };
}

/** Starts a sandbox (id `spec.id`) from a saved state: the backend's restore, or a fresh start with the files put back. */
export async function startFromState(
  backend: Backend,
  rec: SnapshotRecord,
  dir: string,
  spec: SandboxSpec,
  start: () => Promise<BackendSandbox>,
  maxBytes: number,
  signal?: AbortSignal,
): Promise<BackendSandbox> {
  if (rec.kind === 'machine') {
    if (!backend.restoreMachine || !rec.machine) throw new KilnError('UNSUPPORTED_OPTION', `the ${backend.name} backend cannot restore a machine snapshot`);
    return backend.restoreMachine(spec, `${dir}/machine`, rec.machine, { signal, readyTimeoutMs: 60_000 });
  }
  const inner = await start();
  try {
    await loadFiles(inner.agent, dir, rec.paths ?? [], maxBytes);
    return inner;
  } catch (e) {
    await inner.destroy().catch(() => undefined);
    throw e;
  }
}

/** Stands in for a paused sandbox's backend part: no process, no agent. */
export function pausedStandIn(id: string, details: Record<string, unknown>): BackendSandbox {
  return {
    id,
    details,
    get agent(): never {
      throw new KilnError('SANDBOX_PAUSED', `sandbox ${id} is paused; resume it with POST /v1/sandboxes/${id}/resume`);
    },
    usage: async () => ({}),
    onExit: () => undefined,
    destroy: async () => undefined,
  };
}

/** Named snapshots' total size for an owner, against its maxSnapshotMib (QUOTA_EXCEEDED). */
export async function checkSnapshotQuota(snaps: SnapshotFiles, owner: Owner | undefined, addingBytes: number): Promise<void> {
  const max = owner?.limits.maxSnapshotMib;
  if (!owner || max === undefined) return;
  const used = (await snaps.list('named')).filter((r) => r.ownerKeyId === owner.keyId).reduce((n, r) => n + r.sizeBytes, 0);
  const usedMib = Math.ceil(used / 2 ** 20);
  const wantMib = Math.ceil((used + addingBytes) / 2 ** 20);
  if (wantMib > max || (addingBytes === 0 && usedMib >= max))
    throw new KilnError(
      'QUOTA_EXCEEDED',
      `this key's snapshots take ${usedMib} MiB${addingBytes ? `; this one (${Math.ceil(addingBytes / 2 ** 20)} MiB) would pass` : ', at'} its limit of ${max} MiB; delete a snapshot first (DELETE /v1/snapshots/:name)`,
      { details: { limit: 'maxSnapshotMib', value: max, requested: wantMib } },
    );
}
