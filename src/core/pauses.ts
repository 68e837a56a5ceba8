/**
 * Pause, resume and named snapshots as the manager's part (manager.ts keeps the sandbox map and
 * lends what this needs through PauseHost; pause.ts saves and restores state). A paused sandbox
 * stays in the manager's map (state paused, a stand-in without compute) and its record and state
 * stay in KILN_SNAPSHOTS_DIR, so a restarted service adopts it again (adoptPaused).
 */
import type { Admission } from './admission.js';
import type { Backend, BackendName, BackendSandbox, SandboxSpec } from './backend.js';
import type { KilnConfig } from './config.js';
import { KilnError } from './errors.js';
import { setLongTimeout } from './long-timer.js';
import type { PackCatalog } from './packs.js';
import { checkSavable, checkSnapshotQuota, type PauseResult, pausedStandIn, type SnapshotInfo, saveState, snapshotInfo, startFromState } from './pause.js';
import type { WarmPools } from './pools.js';
import type { Owner, OwnerUsage } from './quotas.js';
import { Sandbox } from './sandbox.js';
import { checkSnapshotName, duBytes, SnapshotFiles, type SnapshotRecord } from './snapshots.js';
import type { SandboxEventKind, StoreWrite } from './store.js';

/** What the manager lends: its map, admission, quotas, starts and event trail. */
export interface PauseHost {
  config: KilnConfig;
  packs: PackCatalog;
  pools?: WarmPools;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  admission: Admission;
  ownerUsage: OwnerUsage;
  get(id: string, ownerKeyId?: string): Sandbox;
  has(id: string): boolean;
  /** Lists a sandbox (adopted paused) without starting anything. */
  add(sb: Sandbox): void;
  /** Unlists a sandbox without stopping anything. */
  drop(id: string): void;
  backend(name: BackendName | undefined): Backend;
  /** Arms TTL and idle timers and the exit watch; `release` frees the slot and the quota. */
  register(sb: Sandbox, release: () => void): void;
  startOnBackend(backend: Backend, packName: string, size: Sandbox['size'], backendOptions?: Record<string, unknown>, signal?: AbortSignal, extra?: Partial<SandboxSpec>): Promise<BackendSandbox>;
  recordEvent(sb: Sandbox, kind: SandboxEventKind, data: Record<string, unknown>): void;
  /** Queues a store write (none without a store). */
  record(w: StoreWrite): void;
  /** This node's name in the store. */
  node: string;
  /** A sandbox's compute stopped (paused) or came back (resumed): its restart record follows (kept-records.ts). */
  /** Takes a paused sandbox's network away, and gives it back to the resumed one (before it is ready). */
  networkDown?(sb: Sandbox): Promise<void>;
  networkUp?(sb: Sandbox, inner: BackendSandbox): Promise<void>;
  stateChanged?: (sb: Sandbox) => void;
  delete(id: string, reason: string): Promise<void>;
}

export class Pauses {
  readonly snaps: SnapshotFiles;

  constructor(private readonly h: PauseHost) {
    this.snaps = new SnapshotFiles(h.config.snapshots.dir);
  }

  /** Saves the sandbox's state on disk and frees its compute (admission slot, memory quota). */
  async pause(id: string, ownerKeyId?: string): Promise<PauseResult> {
    const sb = this.h.get(id, ownerKeyId);
    checkSavable(sb, 'pause');
    const t0 = performance.now();
    sb.state = 'paused'; // no new exec, file transfer or pause from here on
    let rec: SnapshotRecord;
    const tmp = await this.snaps.begin();
    try {
      rec = await saveState(sb, id, tmp, false, this.stateMaxBytes(sb));
      rec.sandbox = { id, createdAt: sb.createdAt.toISOString(), expiresAt: sb.expiresAt.toISOString(), idleTimeoutSec: sb.idleTimeoutSec, fromPool: sb.fromPool };
      rec = await this.snaps.commit(tmp, 'paused', rec);
    } catch (e) {
      await this.snaps.removeTmp(tmp);
      if (!this.h.has(id)) throw e;
      // A machine save that failed midway leaves a stopped VM: no use keeping it.
      if (sb.inner.saveMachine) {
        sb.state = 'failed';
        sb.exitReason = `pause failed: ${(e as Error).message}`;
        await this.h.delete(id, sb.exitReason).catch(() => undefined);
      } else sb.state = 'ready';
      throw e;
    }
    if (!this.h.has(id)) {
      // Deleted while it was being saved: its state must not bring it back at the next start.
      await this.snaps.remove('paused', id);
      throw new KilnError('SANDBOX_GONE', `sandbox ${id} was deleted while it was being paused`);
    }
    sb.idleTimer?.clear();
    sb.pausedAt = new Date();
    const inner = sb.inner;
    sb.inner = pausedStandIn(id, { paused: true, kind: rec.kind, sizeBytes: rec.sizeBytes });
    await inner.destroy().catch((e: Error) => this.h.log?.('stopping a paused sandbox failed', { id, error: e.message }));
    await this.h.networkDown?.(sb).catch((e: Error) => this.h.log?.('releasing a paused sandbox network failed', { id, error: e.message }));
    sb.release();
    if (sb.fromPool) this.h.pools?.released({ backend: sb.backendName, pack: sb.packName, ...sb.size });
    const pauseMs = Math.round(performance.now() - t0);
    this.h.stateChanged?.(sb);
    this.h.record({ type: 'sandbox.state', id, state: 'paused', at: new Date() });
    this.h.recordEvent(sb, 'paused', { kind: rec.kind, sizeBytes: rec.sizeBytes, pauseMs });
    return { id, state: 'paused', processesKept: rec.kind === 'machine', pauseMs, sizeBytes: rec.sizeBytes };
  }

  /** Brings a paused sandbox back under its id: the machine restored, or a fresh one with its files. */
  async resume(id: string, ownerKeyId?: string, signal?: AbortSignal): Promise<Sandbox & { resumeMs?: number }> {
    const sb = this.h.get(id, ownerKeyId);
    if (sb.state !== 'paused' || this.resuming.has(id)) throw new KilnError('SANDBOX_NOT_READY', `sandbox ${id} is not paused${this.resuming.has(id) ? ' (a resume is under way)' : ''}`);
    const rec = await this.snaps.record('paused', id);
    if (!rec) throw new KilnError('INTERNAL', `the saved state of sandbox ${id} is missing; delete it`);
    this.resuming.add(id);
    const t0 = performance.now();
    const unreserve = sb.owner ? this.h.ownerUsage.reserve(sb.owner, { memoryMib: sb.size.memoryMib, ttlSec: 0 }) : () => undefined;
    let release: () => void = () => undefined;
    let inner: BackendSandbox | undefined;
    try {
      release = await this.h.admission.acquire(signal);
      inner = await this.startFrom(this.h.backend(sb.backendName), rec, this.snaps.path('paused', id), { id }, sb.size, signal);
      if (!this.h.has(id)) throw new KilnError('SANDBOX_GONE', `sandbox ${id} was deleted during its resume`);
      await this.h.networkUp?.(sb, inner);
    } catch (e) {
      unreserve();
      release();
      await inner?.destroy().catch(() => undefined);
      throw e;
    } finally {
      this.resuming.delete(id);
    }
    sb.inner = inner;
    sb.state = 'ready';
    sb.pausedAt = undefined;
    sb.lastActiveAt = Date.now();
    sb.ttlTimer?.clear();
    this.h.register(sb, () => {
      unreserve();
      release();
    });
    await this.snaps.remove('paused', id).catch(() => undefined);
    const resumeMs = Math.round(performance.now() - t0);
    this.h.stateChanged?.(sb);
    this.h.record({ type: 'sandbox.state', id, state: 'ready', at: new Date() });
    this.h.recordEvent(sb, 'resumed', { kind: rec.kind, resumeMs });
    return Object.assign(sb, { resumeMs });
  }

  private readonly resuming = new Set<string>();

  /** Saves a running sandbox's state as a named snapshot (a microVM stops for the moment of the save). */
  async snapshot(id: string, name: string, ownerKeyId?: string): Promise<SnapshotInfo> {
    const sb = this.h.get(id, ownerKeyId);
    checkSnapshotName(name);
    checkSavable(sb, 'snapshot');
    if (await this.snaps.record('named', name)) throw new KilnError('SNAPSHOT_EXISTS', `a snapshot named "${name}" exists; pick another name or delete it first`);
    await checkSnapshotQuota(this.snaps, sb.owner, 0);
    const tmp = await this.snaps.begin();
    try {
      const rec = await saveState(sb, name, tmp, true, this.stateMaxBytes(sb));
      rec.sizeBytes = await duBytes(tmp);
      await checkSnapshotQuota(this.snaps, sb.owner, rec.sizeBytes);
      if (await this.snaps.record('named', name)) throw new KilnError('SNAPSHOT_EXISTS', `a snapshot named "${name}" exists; pick another name or delete it first`);
      const done = await this.snaps.commit(tmp, 'named', rec);
      this.h.record({
        type: 'snapshot.saved',
        record: {
          name,
          node: this.h.node,
          ownerKeyId: done.ownerKeyId,
          kind: done.kind,
          backend: done.backend,
          pack: done.pack,
          sourceSandboxId: id,
          sizeBytes: done.sizeBytes,
          createdAt: new Date(done.createdAt),
        },
      });
      this.h.recordEvent(sb, 'snapshot.created', { name, kind: done.kind, sizeBytes: done.sizeBytes });
      return snapshotInfo(done);
    } catch (e) {
      await this.snaps.removeTmp(tmp);
      throw e;
    }
  }

  /** Named snapshots the caller may see (undefined: the admin, every one). */
  async snapshots(ownerKeyId?: string): Promise<SnapshotInfo[]> {
    const all = await this.snaps.list('named');
    return all
      .filter((r) => ownerKeyId === undefined || r.ownerKeyId === ownerKeyId)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt))
      .map(snapshotInfo);
  }

  async snapshotInfo(name: string, ownerKeyId?: string): Promise<SnapshotInfo> {
    return snapshotInfo(await this.snapshotRecord(name, ownerKeyId));
  }

  async deleteSnapshot(name: string, ownerKeyId?: string): Promise<void> {
    await this.snapshotRecord(name, ownerKeyId);
    await this.snaps.remove('named', name);
    this.h.record({ type: 'snapshot.deleted', name, at: new Date() });
  }

  /** Removes named snapshots older than the retention (KILN_SNAPSHOT_RETENTION_SEC); answers their names. */
  async sweepSnapshots(now = Date.now()): Promise<string[]> {
    const sec = this.h.config.snapshots.retentionSec;
    if (sec <= 0) return [];
    const old = (await this.snaps.list('named')).filter((r) => now - Date.parse(r.createdAt) > sec * 1000);
    for (const r of old) {
      await this.snaps.remove('named', r.name);
      this.h.record({ type: 'snapshot.deleted', name: r.name, at: new Date() });
    }
    if (old.length) this.h.log?.('snapshots past their retention removed', { names: old.map((r) => r.name) });
    return old.map((r) => r.name);
  }

  /**
   * Start-up: lists again the sandboxes a previous run paused (their records next to their state),
   * `owner` resolving each one's key; an expired one is deleted with its state.
   */
  async adoptPaused(owner: (keyId: string) => Owner | 'revoked' | 'unknown'): Promise<{ adopted: string[]; removed: string[] }> {
    await this.snaps.clearTmp();
    const adopted: string[] = [];
    const removed: string[] = [];
    for (const rec of await this.snaps.list('paused')) {
      const facts = rec.sandbox;
      const o = rec.ownerKeyId ? owner(rec.ownerKeyId) : undefined;
      if (!facts || Date.parse(facts.expiresAt) <= Date.now() || o === 'revoked' || this.h.has(rec.name)) {
        await this.snaps.remove('paused', rec.name);
        removed.push(rec.name);
        continue;
      }
      // The pack's own environment goes with every exec (the manager's create takes it from the catalogue too).
      const packEnv = await this.h.packs.get(rec.pack).then(
        (p) => p.env,
        () => ({}),
      );
      const sb = new Sandbox(
        facts.id,
        rec.backend,
        rec.pack,
        packEnv,
        rec.env,
        { cpus: rec.cpus, memoryMib: rec.memoryMib, diskMib: rec.diskMib },
        pausedStandIn(facts.id, { paused: true, kind: rec.kind, sizeBytes: rec.sizeBytes }),
        0,
        facts.fromPool,
        1,
        new Date(facts.createdAt),
      );
      sb.expiresAt = new Date(facts.expiresAt);
      sb.state = 'paused';
      sb.pausedAt = new Date(rec.createdAt);
      sb.labels = rec.labels;
      sb.idleTimeoutSec = facts.idleTimeoutSec;
      if (o && o !== 'unknown') sb.owner = o;
      this.h.add(sb);
      sb.ttlTimer = setLongTimeout(() => void this.h.delete(sb.id, 'ttl expired').catch(() => undefined), sb.expiresAt.getTime() - Date.now());
      adopted.push(sb.id);
    }
    return { adopted, removed };
  }

  /** Drops a paused sandbox from this process only (its state stays on disk). */
  forget(sb: Sandbox): void {
    sb.ttlTimer?.clear();
    sb.idleTimer?.clear();
    this.h.drop(sb.id);
  }

  async snapshotRecord(name: string, ownerKeyId: string | null | undefined): Promise<SnapshotRecord> {
    checkSnapshotName(name);
    const rec = await this.snaps.record('named', name);
    // Another key's snapshot is answered like one that does not exist; undefined is the admin.
    if (!rec || (ownerKeyId !== undefined && ownerKeyId !== null && rec.ownerKeyId !== ownerKeyId))
      throw new KilnError('SNAPSHOT_NOT_FOUND', `no snapshot named "${name}"; list them with GET /v1/snapshots`);
    return rec;
  }

  startFrom(backend: Backend, rec: SnapshotRecord, dir: string, extra: Partial<SandboxSpec> & { id: string }, size: Sandbox['size'], signal?: AbortSignal): Promise<BackendSandbox> {
    const maxBytes = size.diskMib * 2 ** 20 * 2;
    return this.h.packs
      .image(rec.pack)
      .then((pack) => startFromState(backend, rec, dir, { ...size, pack, ...extra }, () => this.h.startOnBackend(backend, rec.pack, size, undefined, signal, extra), maxBytes, signal));
  }

  /** A saved state is at most about the sandbox's disk (tar and gzip add little). */
  private stateMaxBytes(sb: Sandbox): number {
    return sb.size.diskMib * 2 ** 20 * 2 + (1 << 20);
  }
}
