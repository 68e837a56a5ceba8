/**
 * Sandbox lifecycle: create (admission, pool or backend), exec, files, TTL, delete. Backend-neutral:
 * it sees only the Backend interface and the pack catalogue.
 */
import { randomBytes } from 'node:crypto';
import type { ChunkSink, ExecHandlers } from '../protocol/agent-client.js';
import { Admission } from './admission.js';
import type { Backend, BackendName, BackendSandbox, SandboxSpec } from './backend.js';
import type { KilnConfig } from './config.js';
import { KilnError } from './errors.js';
import { type ExecOptions, type ExecOutcome, ExecRunner, type ExecStreamHandlers, type InteractiveExec, type InteractiveOptions } from './exec.js';
import type { Journal } from './journal.js';
import { checkLabels, type ListOptions, type ListResult, listSandboxes } from './listing.js';
import { setLongTimeout } from './long-timer.js';
import type { Metrics } from './metrics.js';
import type { PackCatalog } from './packs.js';
import type { PoolKey, WarmPools } from './pools.js';
import { defaultTtlFor, execTimeoutFor, type Owner, OwnerUsage } from './quotas.js';
import { type CreateSandboxOptions, Sandbox, SIZE_MINIMUMS } from './sandbox.js';
import type { SandboxEventKind } from './store.js';
import { warmUp } from './warmup.js';

export interface ManagerDeps {
  config: KilnConfig;
  backends: Map<BackendName, Backend>;
  packs: PackCatalog;
  metrics?: Metrics;
  pools?: WarmPools;
  /** Where sandboxes and their events are recorded (off the request path); none: nothing is kept. */
  journal?: Journal;
  /** This node's name in the store (KILN_NODE_ID). */
  node?: string;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  readonly admission: Admission;
  private readonly exec: ExecRunner;
  private closing = false;
  private healthTimer: NodeJS.Timeout | undefined;
  readonly ownerUsage = new OwnerUsage();

  constructor(private readonly d: ManagerDeps) {
    this.admission = new Admission({ capacity: d.config.maxSandboxes, queueLength: d.config.createQueueLength, queueTimeoutMs: d.config.createQueueTimeoutMs });
    this.exec = new ExecRunner(d.config.limits, d.metrics);
  }

  list(o: ListOptions = {}): ListResult {
    return listSandboxes(this.sandboxes.values(), o);
  }

  /** The sandbox with this id, whoever owns it, or undefined. */
  peek(id: string): Sandbox | undefined {
    return this.sandboxes.get(id);
  }

  /**
   * The sandbox, if the caller may see it: `ownerKeyId` undefined is the admin (every sandbox);
   * a key sees only its own, and another's is answered exactly like one that does not exist.
   */
  get(id: string, ownerKeyId?: string): Sandbox {
    const s = this.sandboxes.get(id);
    if (!s || (ownerKeyId !== undefined && s.owner?.keyId !== ownerKeyId)) throw new KilnError('SANDBOX_NOT_FOUND', `no sandbox with id "${id}"; list them with GET /v1/sandboxes`);
    return s;
  }

  backend(name: BackendName | undefined): Backend {
    const n = name ?? this.d.config.defaultBackend;
    const b = this.d.backends.get(n);
    if (!b)
      throw new KilnError(
        'UNKNOWN_BACKEND',
        `backend "${n}" is not configured on this host; configured: ${[...this.d.backends.keys()].join(', ') || 'none'} (GET /v1/backends says why the others are not)`,
        { details: { backend: n, configured: [...this.d.backends.keys()] } },
      );
    return b;
  }

  /** The host's sandbox limits, for checks made before a sandbox is asked for (one-shot runs). */
  get limits(): KilnConfig['limits'] {
    return this.d.config.limits;
  }

  /** The exec timeout a request would get; one out of range is refused naming timeoutMs. */
  execTimeout(ms: number | undefined): number {
    return this.exec.timeout(ms);
  }

  /** Validates sizes against the host limits (the minima are the API schema's) and fills defaults. */
  resolveSize(o: CreateSandboxOptions, owner?: Owner): { cpus: number; memoryMib: number; diskMib: number; ttlSec: number } {
    const l = this.d.config.limits;
    const pick = (v: number | undefined, dflt: number, max: number, name: keyof typeof SIZE_MINIMUMS): number => {
      const x = v ?? dflt;
      const { min, exclusive, unit } = SIZE_MINIMUMS[name];
      if (!Number.isFinite(x) || x < min || (exclusive && x === min) || x > max) {
        const from = exclusive ? `more than ${min}` : String(min);
        throw new KilnError('INVALID_REQUEST', `${name} must be from ${from} to ${max}${unit} on this host (got ${v})`, { details: { field: name, value: v, minimum: min, maximum: max } });
      }
      return x;
    };
    return {
      cpus: pick(o.cpus, l.defaultCpus, l.maxCpus, 'cpus'),
      memoryMib: pick(o.memoryMib, l.defaultMemoryMib, l.maxMemoryMib, 'memoryMib'),
      diskMib: pick(o.diskMib, l.defaultDiskMib, l.maxDiskMib, 'diskMib'),
      ttlSec: pick(o.ttlSec, defaultTtlFor(owner, l.defaultTtlSec), l.maxTtlSec, 'ttlSec'),
    };
  }

  /** `owner`: the API key creating it (its limits are checked here); undefined: the admin. */
  async create(o: CreateSandboxOptions, signal?: AbortSignal, owner?: Owner): Promise<Sandbox> {
    if (this.closing) throw new KilnError('SHUTTING_DOWN', 'kiln is shutting down', { retryAfterSec: 5 });
    const pack = await this.d.packs.get(o.pack);
    const backend = this.backend(o.backend);
    const size = this.resolveSize(o, owner);
    const labels = checkLabels(o.labels);
    const t0 = performance.now();
    const unreserve = owner ? this.ownerUsage.reserve(owner, size) : () => undefined;
    let release: () => void;
    try {
      release = await this.admission.acquire(signal);
    } catch (e) {
      unreserve();
      throw e;
    }
    let inner: BackendSandbox | undefined;
    let fromPool = false;
    try {
      const poolKey = { backend: backend.name, pack: pack.name, cpus: size.cpus, memoryMib: size.memoryMib, diskMib: size.diskMib };
      inner = o.backendOptions ? undefined : this.d.pools?.take(poolKey);
      fromPool = inner !== undefined;
      inner ??= await this.startOnBackend(backend, o.pack, size, o.backendOptions, signal);
      const readyMs = Math.round((performance.now() - t0) * 10) / 10;
      this.d.metrics?.observeCreate(backend.name, pack.name, fromPool, readyMs);
      const sb = new Sandbox(inner.id, backend.name, pack.name, pack.env, o.env ?? {}, size, inner, readyMs, fromPool, size.ttlSec);
      sb.owner = owner;
      sb.labels = labels;
      this.register(sb, () => {
        unreserve();
        release();
      });
      this.recordCreated(sb);
      return sb;
    } catch (e) {
      unreserve();
      release();
      if (inner) await inner.destroy().catch(() => undefined);
      this.d.metrics?.countError(e);
      throw e;
    }
  }

  /** Starts a fresh sandbox on a backend; also used by the warm pools. */
  async startOnBackend(
    backend: Backend,
    packName: string,
    size: { cpus: number; memoryMib: number; diskMib: number },
    backendOptions?: Record<string, unknown>,
    signal?: AbortSignal,
  ): Promise<BackendSandbox> {
    const spec: SandboxSpec = { id: newId(), pack: await this.d.packs.image(packName), cpus: size.cpus, memoryMib: size.memoryMib, diskMib: size.diskMib, backendOptions };
    const inner = await backend.create(spec, { signal, readyTimeoutMs: 60_000 });
    const restoreMs = inner.details.restoreMs;
    const bootMs = typeof restoreMs === 'number' ? restoreMs : inner.details.bootMs;
    if (typeof bootMs === 'number') this.d.metrics?.bootSeconds.observe({ backend: backend.name, kind: typeof restoreMs === 'number' ? 'restore' : 'boot' }, bootMs / 1000);
    return inner;
  }

  /** A warm pool's member: a fresh sandbox of the key's shape, its pack's program run once. */
  async startPoolMember(k: PoolKey): Promise<BackendSandbox> {
    const sb = await this.startOnBackend(this.backend(k.backend), k.pack, k);
    await warmUp(sb, await this.d.packs.get(k.pack));
    return sb;
  }

  /**
   * Liveness: pings every ready sandbox's agent. One that does not answer within the deadline is
   * declared failed and deleted, so a hung guest never holds capacity forever.
   */
  startHealthChecks(intervalMs = 15_000, deadlineMs = 5_000): void {
    const timer = setInterval(() => {
      for (const sb of this.sandboxes.values()) {
        if (sb.state !== 'ready') continue;
        sb.inner.agent.ping(AbortSignal.timeout(deadlineMs)).then(
          ({ rttMs }) => {
            sb.missedPings = 0;
            this.d.metrics?.agentRtt.observe({ backend: sb.backendName }, rttMs / 1000);
          },
          (e: Error) => {
            // Three misses in a row: a busy agent (e.g. stdin backpressure) is not a dead one.
            if (sb.state !== 'ready' || ++sb.missedPings < 3) return;
            sb.state = 'failed';
            sb.exitReason = `agent stopped answering (${e.message})`;
            this.d.log?.('sandbox unresponsive; deleting', { id: sb.id });
            void this.delete(sb.id, sb.exitReason).catch(() => undefined);
          },
        );
      }
    }, intervalMs);
    timer.unref();
    this.healthTimer = timer;
  }

  private register(sb: Sandbox, release: () => void): void {
    this.sandboxes.set(sb.id, sb);
    this.d.metrics?.sandboxAdded(sb.backendName, sb.packName);
    const ttlMs = sb.expiresAt.getTime() - Date.now();
    sb.ttlTimer = setLongTimeout(() => {
      this.d.log?.('sandbox TTL expired', { id: sb.id });
      void this.delete(sb.id, 'ttl expired').catch(() => undefined);
    }, ttlMs);
    let released = false;
    const free = (): void => {
      if (released) return;
      released = true;
      release();
      this.d.metrics?.sandboxRemoved(sb.backendName, sb.packName);
    };
    sb.inner.onExit((reason) => {
      if (sb.state !== 'ready') return;
      sb.state = 'failed';
      sb.exitReason = reason;
      this.d.log?.('sandbox died', { id: sb.id, reason });
      void this.delete(sb.id, `died: ${reason}`).catch(() => undefined);
    });
    sb.release = free;
  }

  /** `reason` goes into the event trail; `ownerKeyId` as for get(). */
  async delete(id: string, reason = 'deleted by request', ownerKeyId?: string): Promise<void> {
    const sb = this.get(id, ownerKeyId);
    this.sandboxes.delete(id);
    this.recordEnded(sb, reason);
    if (sb.state === 'ready') sb.state = 'stopping';
    sb.ttlTimer?.clear();
    try {
      await sb.inner.destroy();
    } finally {
      if (sb.state === 'stopping') sb.state = 'stopped';
      sb.release();
      if (sb.fromPool) this.d.pools?.released({ backend: sb.backendName, pack: sb.packName, ...sb.size });
    }
  }

  private ready(id: string): Sandbox {
    const sb = this.get(id);
    if (sb.state !== 'ready') throw new KilnError('SANDBOX_GONE', `sandbox ${id} is ${sb.state}${sb.exitReason ? ` (${sb.exitReason})` : ''}; create a new one`);
    return sb;
  }

  /** Refuses a maxOutputBytes over the operator's maximum before anything is created for it. */
  checkOutputCap(maxOutputBytes: number | undefined): void {
    this.exec.outputCap(maxOutputBytes);
  }

  async runExec(id: string, o: ExecOptions, handlers?: ExecStreamHandlers, signal?: AbortSignal): Promise<ExecOutcome> {
    const sb = this.ready(id);
    const timeoutMs = execTimeoutFor(sb.owner, o.timeoutMs, this.d.config.limits.defaultExecTimeoutMs);
    const done = this.recordExec(sb, false);
    try {
      const r = await this.exec.run(sb, { ...o, timeoutMs }, handlers, signal);
      done(r);
      return r;
    } catch (e) {
      done(undefined, e);
      throw e;
    }
  }

  async interactive(id: string, o: InteractiveOptions, handlers: ExecHandlers): Promise<InteractiveExec> {
    const sb = this.ready(id);
    const timeoutMs = execTimeoutFor(sb.owner, o.timeoutMs, this.d.config.limits.maxExecTimeoutMs);
    const done = this.recordExec(sb, true);
    try {
      const ex = await this.exec.interactive(sb, { ...o, timeoutMs }, handlers);
      ex.done.then(
        (r) => done(r),
        (e: unknown) => done(undefined, e),
      );
      return ex;
    } catch (e) {
      done(undefined, e);
      throw e;
    }
  }

  async writeFile(id: string, path: string, data: Buffer | AsyncIterable<Buffer>, mode?: number): Promise<{ bytes: number }> {
    const sb = this.ready(id);
    const r = await sb.inner.agent.writeFile(path, data, { mode, maxBytes: this.d.config.limits.maxFileBytes });
    this.recordEvent(sb, 'file.written', { path, bytes: r.bytes });
    return r;
  }

  /** `sink` may return a promise: the transfer waits for it (backpressure to the sandbox). */
  async readFile(id: string, path: string, sink: ChunkSink, signal?: AbortSignal): Promise<{ bytes: number }> {
    return this.ready(id).inner.agent.readFile(path, sink, { maxBytes: this.d.config.limits.maxFileBytes, signal });
  }

  async listFiles(id: string, path: string) {
    return this.ready(id).inner.agent.list(path);
  }

  async putArchive(id: string, path: string, data: Buffer | AsyncIterable<Buffer>) {
    const sb = this.ready(id);
    const r = await sb.inner.agent.putArchive(path, data, { maxBytes: this.d.config.limits.maxFileBytes });
    this.recordEvent(sb, 'file.written', { path, bytes: r.bytes, files: r.files ?? 0, archive: true });
    return r;
  }

  /** Archives are capped at the file limit too, on the host (the agent has no cap for them). */
  async getArchive(id: string, path: string, gzip: boolean, sink: ChunkSink, signal?: AbortSignal) {
    return this.ready(id).inner.agent.getArchive(path, sink, { gzip, maxBytes: this.d.config.limits.maxFileBytes, signal });
  }

  get count(): number {
    return this.sandboxes.size;
  }

  async close(): Promise<void> {
    this.closing = true;
    clearInterval(this.healthTimer);
    this.admission.close();
    await Promise.allSettled([...this.sandboxes.keys()].map((id) => this.delete(id, 'service stopped')));
  }

  // The event trail: each call queues a write (an array push); the journal flushes off this path.

  private recordCreated(sb: Sandbox): void {
    const j = this.d.journal;
    if (!j) return;
    j.record({
      type: 'sandbox.created',
      record: {
        id: sb.id,
        node: this.d.node ?? 'local',
        ownerKeyId: sb.owner?.keyId ?? null,
        backend: sb.backendName,
        pack: sb.packName,
        ...sb.size,
        labels: sb.labels,
        metadata: { fromPool: sb.fromPool, readyMs: sb.readyMs },
        state: sb.state,
        createdAt: sb.createdAt,
        expiresAt: sb.expiresAt,
      },
    });
    this.recordEvent(sb, 'created', { fromPool: sb.fromPool, readyMs: sb.readyMs });
    if (sb.owner) j.record({ type: 'usage', keyId: sb.owner.keyId, usage: { sandboxesCreated: 1, execs: 0, execMs: 0 } });
  }

  private recordEnded(sb: Sandbox, reason: string): void {
    this.d.journal?.record({ type: 'sandbox.ended', id: sb.id, state: sb.state === 'failed' ? 'failed' : 'deleted', at: new Date(), reason });
    this.recordEvent(sb, 'deleted', { reason });
  }

  private recordEvent(sb: Sandbox, kind: SandboxEventKind, data: Record<string, unknown>): void {
    this.d.journal?.record({ type: 'event', event: { sandboxId: sb.id, at: new Date(), kind, data } });
  }

  /** exec.started now; the returned function records exec.ended (status and duration, never output). */
  private recordExec(sb: Sandbox, interactive: boolean): (r?: ExecOutcome, e?: unknown) => void {
    if (!this.d.journal) return () => undefined;
    const exec = ++sb.execSeq;
    const t0 = performance.now();
    this.recordEvent(sb, 'exec.started', { exec, interactive });
    return (r, e) => {
      const durationMs = Math.round(r?.durationMs ?? performance.now() - t0);
      this.recordEvent(
        sb,
        'exec.ended',
        r ? { exec, exitCode: r.exitCode, signal: r.signal, durationMs, timedOut: r.timedOut, oomKilled: r.oomKilled } : { exec, error: e instanceof KilnError ? e.code : 'INTERNAL', durationMs },
      );
      if (sb.owner) this.d.journal?.record({ type: 'usage', keyId: sb.owner.keyId, usage: { sandboxesCreated: 0, execs: 1, execMs: durationMs } });
    };
  }
}

export function newId(): string {
  return `sb-${randomBytes(8).toString('hex')}`;
}
