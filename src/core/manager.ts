/**
 * Sandbox lifecycle: create (admission, pool or backend), exec, files, TTL, delete. Backend-neutral:
 * it sees only the Backend interface and the pack catalogue.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { ChunkSink, ExecHandlers } from '../protocol/agent-client.js';
import type { TcpStream } from '../protocol/agent-tcp.js';
import { Admission } from './admission.js';
import type { Backend, BackendName, BackendSandbox, SandboxSpec } from './backend.js';
import type { KilnConfig } from './config.js';
import { KilnError } from './errors.js';
import { type ExecOptions, type ExecOutcome, ExecRunner, type ExecStreamHandlers, type InteractiveExec, type InteractiveOptions } from './exec.js';
import type { Journal } from './journal.js';
import { type KeptRecord, KeptRecords } from './kept-records.js';
import { checkLabels, type ListOptions, type ListResult, listSandboxes } from './listing.js';
import { setLongTimeout } from './long-timer.js';
import type { Metrics } from './metrics.js';
import type { NetworkEventsAnswer, NetworkHooks, NetworkPolicyName } from './network.js';
import { type PackCatalog, zygoteOf } from './packs.js';
import { Pauses } from './pauses.js';
import type { PoolKey, WarmPools } from './pools.js';
import { defaultTtlFor, execTimeoutFor, type Owner, OwnerUsage } from './quotas.js';
import type { RunnerKey, Runners } from './runners.js';
import { type CreateSandboxOptions, Sandbox, SIZE_MINIMUMS } from './sandbox.js';
import type { SandboxEventKind } from './store.js';
import { warmUp } from './warmup.js';
import type { KeptWorkspace, WorkspaceHooks, WorkspaceKind } from './workspace.js';

export interface ManagerDeps {
  config: KilnConfig;
  backends: Map<BackendName, Backend>;
  packs: PackCatalog;
  metrics?: Metrics;
  pools?: WarmPools;
  /** Runners of fork runs (runners.ts); none: every one-shot run starts a sandbox of its own. */
  runners?: Runners;
  /** Where sandboxes and their events are recorded (off the request path); none: nothing is kept. */
  journal?: Journal;
  /** This node's name in the store (KILN_NODE_ID). */
  node?: string;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
  /** Sandbox networking (src/net/); none: a create asking for a network is refused. */
  network?: NetworkHooks;
  /** Workspace sandboxes (src/workspace/); none: a create with `workspace` is refused. */
  workspaces?: WorkspaceHooks;
}

/** How a delete treats a workspace's changes nobody approved or rejected. */
export interface DeleteOptions {
  /** Drop them (default: a delete by request refuses with WORKSPACE_PENDING). */
  discard?: boolean;
}

export class SandboxManager {
  private readonly sandboxes = new Map<string, Sandbox>();
  readonly admission: Admission;
  private readonly exec: ExecRunner;
  private closing = false;
  private healthTimer: NodeJS.Timeout | undefined;
  readonly ownerUsage = new OwnerUsage();
  /** Each sandbox's record for the next start of the service (kept-records.ts). */
  private readonly kept: KeptRecords;
  /** Pause, resume and named snapshots (pauses.ts). */
  readonly pauses: Pauses;
  /** Packs whose runs are not forked until then (forkRun: a runner that failed them). */
  private readonly noForkUntil = new Map<string, number>();

  constructor(private readonly d: ManagerDeps) {
    this.kept = new KeptRecords(join(d.config.runDir, 'sandboxes'));
    this.admission = new Admission({ capacity: d.config.maxSandboxes, queueLength: d.config.createQueueLength, queueTimeoutMs: d.config.createQueueTimeoutMs });
    this.exec = new ExecRunner(d.config.limits, d.metrics);
    this.pauses = this.pausesHost(); // after admission: the host lends it
    d.metrics?.portBytes(() => [...this.sandboxes.values()].filter((sb) => sb.portBytes.in + sb.portBytes.out > 0).map((sb) => ({ sandbox: sb.id, ...sb.portBytes })));
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

  /**
   * `owner`: the API key creating it (its limits are checked here); undefined: the admin.
   * `restoreId`: a workspace sandbox a restarted service brings back under its old id.
   */
  async create(o: CreateSandboxOptions, signal?: AbortSignal, owner?: Owner, restoreId?: string): Promise<Sandbox> {
    if (this.closing) throw new KilnError('SHUTTING_DOWN', 'kiln is shutting down', { retryAfterSec: 5 });
    const seed = o.fromSnapshot ? await this.pauses.snapshotRecord(o.fromSnapshot, owner?.keyId ?? null) : undefined;
    if (seed) o = { ...o, pack: seed.pack, backend: seed.backend, cpus: seed.cpus, memoryMib: seed.memoryMib, diskMib: seed.diskMib, env: { ...seed.env, ...o.env } };
    const pack = await this.d.packs.get(o.pack);
    const backend = this.backend(o.backend);
    const size = this.resolveSize(o, owner);
    const labels = checkLabels(o.labels);
    const idleTimeoutSec = this.idleTimeout(o);
    const netPolicy = this.networkPolicy(o);
    const t0 = performance.now();
    const { unreserve, release } = await this.admit(owner, size, signal);
    let inner: BackendSandbox | undefined;
    let fromPool = false;
    const id = restoreId ?? newId();
    let workspace: Sandbox['workspace'];
    try {
      let spec: Partial<SandboxSpec> = {};
      if (o.workspace) {
        const hooks = this.d.workspaces;
        if (!hooks) throw new KilnError('WORKSPACE_FORBIDDEN', 'workspaces are off on this service: the operator sets KILN_WORKSPACE_ROOTS to the folders that may be opened');
        const kind = await this.workspaceKind(backend);
        const ws = await hooks.open(id, o.workspace, { pack: pack.name, backend: backend.name, ...size, labels, env: o.env ?? {}, ownerKeyId: owner?.keyId ?? null }, kind, signal);
        spec = { id, workspace: ws.spec };
        workspace = { path: ws.path, gitWritable: ws.gitWritable, sizeMib: ws.sizeMib, restored: restoreId !== undefined };
      }
      const poolKey = { backend: backend.name, pack: pack.name, cpus: size.cpus, memoryMib: size.memoryMib, diskMib: size.diskMib };
      // A pooled sandbox has no workspace and another id: workspace sandboxes always start fresh.
      inner = o.backendOptions || o.workspace || seed ? undefined : this.d.pools?.take(poolKey);
      fromPool = inner !== undefined;
      if (seed) inner = await this.pauses.startFrom(backend, seed, this.pauses.snaps.path('named', seed.name), { ...spec, id }, size, signal);
      inner ??= await this.startOnBackend(backend, o.pack, size, o.backendOptions, signal, spec);
      const network = netPolicy ? await this.d.network!.attach(inner.id, inner, netPolicy, o.network ?? { policy: netPolicy.policy }) : undefined;
      const readyMs = Math.round((performance.now() - t0) * 10) / 10;
      this.d.metrics?.observeCreate(backend.name, pack.name, fromPool, readyMs);
      const sb = new Sandbox(inner.id, backend.name, pack.name, pack.env, o.env ?? {}, size, inner, readyMs, fromPool, size.ttlSec);
      sb.owner = owner;
      sb.labels = labels;
      sb.idleTimeoutSec = idleTimeoutSec;
      sb.workspace = workspace;
      sb.network = network;
      if (network) sb.networkRequest = o.network;
      this.register(sb, () => {
        unreserve();
        release();
      });
      this.recordCreated(sb);
      // A record only where a restart can find the sandbox again, written before the create answers:
      // a sandbox whose create answered survives a kill of the service that follows at once.
      if (backend.reattach) await this.keep(sb);
      return sb;
    } catch (e) {
      unreserve();
      release();
      if (inner) await inner.destroy().catch(() => undefined);
      if (inner && netPolicy) await this.d.network?.detach(inner.id).catch(() => undefined);
      // A failed first start drops the new workspace; a failed restore keeps the changes for the next try.
      if (workspace && !restoreId) await this.d.workspaces?.discard(id).catch(() => undefined);
      this.d.metrics?.countError(e);
      throw e;
    }
  }

  /** A key's reservation of the size, then an admission slot (the reservation is undone if none comes). */
  private async admit(owner: Owner | undefined, size: { cpus: number; memoryMib: number; diskMib: number; ttlSec: number }, signal?: AbortSignal) {
    const unreserve = owner ? this.ownerUsage.reserve(owner, size) : () => undefined;
    try {
      return { unreserve, release: await this.admission.acquire(signal) };
    } catch (e) {
      unreserve();
      throw e;
    }
  }

  /** The checked network policy of a create (the operator's default when it asks for none), or a clear 4xx. */
  private networkPolicy(o: CreateSandboxOptions) {
    if (this.d.network) return this.d.network.check(o.network);
    if (o.network && o.network.policy !== 'none') throw new KilnError('NETWORK_FORBIDDEN', 'sandbox networking is off on this service', { details: { field: 'network.policy' } });
    return undefined;
  }

  private readonly workspaceKinds = new Map<string, Promise<WorkspaceKind | false>>();

  /** How the backend takes a workspace (its probe's capabilities, asked once), or UNSUPPORTED_OPTION. */
  private async workspaceKind(backend: Backend): Promise<WorkspaceKind> {
    let k = this.workspaceKinds.get(backend.name);
    if (!k) {
      k = backend.probe().then((a) => a.capabilities.workspace);
      this.workspaceKinds.set(backend.name, k);
    }
    const kind = await k;
    if (!kind)
      throw new KilnError('UNSUPPORTED_OPTION', `the ${backend.name} backend cannot run workspace sandboxes; use namespace or qemu`, { details: { field: 'workspace', backend: backend.name } });
    return kind;
  }

  /** Brings back the workspace sandboxes a previous run of the service kept; answers the ids it could not. */
  async restore(kept: KeptWorkspace[]): Promise<{ restored: string[]; failed: { id: string; reason: string }[] }> {
    const restored: string[] = [];
    const failed: { id: string; reason: string }[] = [];
    for (const k of kept) {
      try {
        const { facts } = k;
        await this.create(
          {
            pack: facts.pack,
            backend: facts.backend,
            cpus: facts.cpus,
            memoryMib: facts.memoryMib,
            diskMib: facts.diskMib,
            ttlSec: facts.ttlSec,
            labels: facts.labels,
            env: facts.env,
            workspace: k.request,
          },
          undefined,
          k.owner,
          k.id,
        );
        this.recordEvent(this.sandboxes.get(k.id)!, 'restored', { reason: 'service restarted; the workspace changes are kept, processes are not' });
        restored.push(k.id);
      } catch (e) {
        failed.push({ id: k.id, reason: e instanceof Error ? e.message : String(e) });
      }
    }
    return { restored, failed };
  }

  /** The idle timeout a create gets: asked for, else a workspace sandbox's default, else none. */
  private idleTimeout(o: CreateSandboxOptions): number | undefined {
    const max = this.d.config.limits.maxTtlSec;
    const v = o.idleTimeoutSec ?? (o.workspace ? Math.min(this.d.config.workspaces.idleTtlSec, max) : undefined);
    if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > max))
      throw new KilnError('INVALID_REQUEST', `idleTimeoutSec must be from 1 to ${max} s on this host (got ${v})`, { details: { field: 'idleTimeoutSec', value: v, minimum: 1, maximum: max } });
    return v;
  }

  /** Marks activity (exec, file transfer, review): restarts the sandbox's idle timeout. */
  touch(sb: Sandbox): void {
    sb.lastActiveAt = Date.now();
  }

  /**
   * A one-shot run forked in a runner (runners.ts, agent/zygote_linux.go) instead of a sandbox of
   * its own; undefined when this run cannot be forked here (no runners, another backend, a pack
   * without a zygote, the runner could not fork it before the program started): the caller then
   * runs it in a fresh sandbox. Admission and the key's limits count it as a sandbox while it runs.
   */
  async forkRun(
    o: { pack: string; backend?: BackendName; cpus?: number; memoryMib?: number; ttlSec: number },
    exec: ExecOptions,
    handlers?: ExecStreamHandlers,
    signal?: AbortSignal,
    owner?: Owner,
  ): Promise<(ExecOutcome & { sandboxId: string; createMs: number }) | undefined> {
    const runners = this.d.runners;
    if (!runners || this.closing) return undefined;
    const backend = this.backend(o.backend);
    const pack = await this.d.packs.get(o.pack);
    if (backend.name !== 'namespace' || !zygoteOf(pack, await this.d.packs.image(pack.name))) return undefined;
    // A pack whose runner could not start, or did not fork its run, runs in sandboxes of its own
    // for a while (an interpreter without what the zygote needs would cost a runner per run).
    const off = this.noForkUntil.get(pack.name);
    if (off !== undefined && off > Date.now()) return undefined;
    const size = this.resolveSize(o, owner);
    const timeoutMs = execTimeoutFor(owner, exec.timeoutMs, this.d.config.limits.defaultExecTimeoutMs);
    const t0 = performance.now();
    const { unreserve, release } = await this.admit(owner, size, signal);
    let reusable = false;
    let borrowed: Awaited<ReturnType<Runners['borrow']>> | undefined;
    try {
      try {
        borrowed = await runners.borrow({ pack: pack.name, cpus: size.cpus, memoryMib: size.memoryMib, diskMib: size.diskMib }, signal);
      } catch (e) {
        if (signal?.aborted) throw e;
        this.d.log?.('runner did not start; runs of this pack start sandboxes of their own for a minute', { pack: pack.name, error: (e as Error).message });
        this.noForkUntil.set(pack.name, Date.now() + NO_FORK_MS);
        return undefined;
      }
      const createMs = Math.round((performance.now() - t0) * 10) / 10;
      const id = newId();
      const sb = new Sandbox(id, backend.name, pack.name, pack.env, {}, size, borrowed.sandbox, createMs, borrowed.warm, o.ttlSec);
      sb.owner = owner;
      let r: ExecOutcome;
      try {
        r = await this.exec.run(sb, { ...exec, timeoutMs, fork: true }, handlers, signal);
      } catch (e) {
        // Not a run a runner makes (a program of its own files, say): nothing happened there.
        if (e instanceof KilnError && e.details?.agentCode === 'NOT_FORKABLE') {
          reusable = true;
          return undefined;
        }
        // Refused before the program started (the zygote could not fork it): run it the usual way.
        if (e instanceof KilnError && e.details?.agentCode === 'FORK_REFUSED') {
          this.noForkUntil.set(pack.name, Date.now() + NO_FORK_MS);
          this.d.log?.('fork run refused; running in a sandbox of its own', { error: e.message });
          return undefined;
        }
        this.recordForkRun(sb, undefined, e);
        throw e;
      }
      reusable = r.forked === true;
      if (!reusable) this.noForkUntil.set(pack.name, Date.now() + NO_FORK_MS);
      this.d.metrics?.observeCreate(backend.name, pack.name, borrowed.warm, createMs);
      this.recordForkRun(sb, r);
      return { ...r, sandboxId: id, createMs };
    } catch (e) {
      this.d.metrics?.countError(e);
      throw e;
    } finally {
      borrowed?.giveBack(reusable);
      release();
      unreserve();
    }
  }

  /** A runner of fork runs: a fresh sandbox whose agent starts the pack's interpreter as its zygote. */
  async startRunner(k: RunnerKey, signal?: AbortSignal): Promise<BackendSandbox> {
    const pack = await this.d.packs.get(k.pack);
    const zygote = zygoteOf(pack, await this.d.packs.image(k.pack));
    if (!zygote) throw new KilnError('INVALID_REQUEST', `pack ${k.pack} has no interpreter to fork runs from`);
    return this.startOnBackend(this.backend('namespace'), k.pack, k, undefined, signal, { zygote });
  }

  /** Starts a fresh sandbox on a backend; also used by the warm pools. */
  async startOnBackend(
    backend: Backend,
    packName: string,
    size: { cpus: number; memoryMib: number; diskMib: number },
    backendOptions?: Record<string, unknown>,
    signal?: AbortSignal,
    extra: Partial<SandboxSpec> = {},
  ): Promise<BackendSandbox> {
    const spec: SandboxSpec = { id: newId(), pack: await this.d.packs.image(packName), cpus: size.cpus, memoryMib: size.memoryMib, diskMib: size.diskMib, backendOptions, ...extra };
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
    this.armTtl(sb);
    if (sb.idleTimeoutSec) this.armIdle(sb, sb.idleTimeoutSec * 1000);
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

  private armTtl(sb: Sandbox): void {
    sb.ttlTimer?.clear();
    sb.ttlTimer = setLongTimeout(() => {
      this.d.log?.('sandbox TTL expired', { id: sb.id });
      void this.delete(sb.id, 'ttl expired').catch(() => undefined);
    }, sb.expiresAt.getTime() - Date.now());
  }

  /**
   * Makes the sandbox expire `ttlSec` from now (longer or shorter than before), within the host's
   * KILN_MAX_TTL_SEC and its key's maxTtlSec. `ownerKeyId` as for get().
   */
  setTtl(id: string, ttlSec: number, ownerKeyId?: string): Sandbox {
    const sb = this.get(id, ownerKeyId);
    const max = Math.min(this.d.config.limits.maxTtlSec, sb.owner?.limits.maxTtlSec ?? Number.POSITIVE_INFINITY);
    if (!Number.isInteger(ttlSec) || ttlSec < 1 || ttlSec > max) {
      throw new KilnError('INVALID_REQUEST', `ttlSec must be an integer from 1 to ${max} s for this sandbox (got ${ttlSec})`, {
        details: { field: 'ttlSec', value: ttlSec, minimum: 1, maximum: max },
      });
    }
    sb.expiresAt = new Date(Date.now() + ttlSec * 1000);
    this.armTtl(sb);
    return sb;
  }

  /** Deletes the sandbox once it has been idle for the whole timeout (checked when the timer fires). */
  private armIdle(sb: Sandbox, inMs: number): void {
    sb.idleTimer = setLongTimeout(() => {
      const idleMs = Date.now() - sb.lastActiveAt;
      const limitMs = sb.idleTimeoutSec! * 1000;
      if (sb.execsRunning > 0 || idleMs < limitMs) return this.armIdle(sb, sb.execsRunning > 0 ? limitMs : limitMs - idleMs);
      this.d.log?.('sandbox idle timeout', { id: sb.id });
      void this.delete(sb.id, `idle for ${sb.idleTimeoutSec} s`, undefined, { discard: true }).catch(() => undefined);
    }, inMs);
  }

  /**
   * `reason` goes into the event trail; `ownerKeyId` as for get(). A workspace sandbox with changes
   * nobody approved or rejected is refused (WORKSPACE_PENDING) unless `discard`; a service stop
   * keeps them for the next start instead.
   */
  async delete(id: string, reason = 'deleted by request', ownerKeyId?: string, o: DeleteOptions = {}): Promise<void> {
    const sb = this.get(id, ownerKeyId);
    const keep = this.closing && sb.workspace !== undefined;
    if (sb.workspace && !keep && !o.discard && this.d.workspaces) {
      const pending = await this.d.workspaces.pendingCount(id, sb.inner.agent);
      if (pending > 0)
        throw new KilnError(
          'WORKSPACE_PENDING',
          `sandbox ${id} has ${pending} workspace change${pending === 1 ? '' : 's'} nobody approved or rejected: approve or reject them, or delete with ?discard=true to drop them`,
          {
            details: { pending },
          },
        );
    }
    if (!this.sandboxes.has(id)) return; // deleted meanwhile
    this.sandboxes.delete(id);
    const unrecorded = this.d.backends.get(sb.backendName)?.reattach ? this.kept.remove(id).catch(() => undefined) : undefined;
    this.recordEnded(sb, reason);
    if (sb.state === 'ready') sb.state = 'stopping';
    sb.ttlTimer?.clear();
    sb.idleTimer?.clear();
    try {
      await sb.inner.destroy();
    } finally {
      if (sb.network) await this.d.network?.detach(id).catch((e: Error) => this.d.log?.('network release failed', { id, error: e.message }));
      if (sb.state === 'stopping') sb.state = 'stopped';
      if (sb.state === 'paused') await this.pauses.snaps.remove('paused', id).catch((e: Error) => this.d.log?.('removing a paused sandbox state failed', { id, error: e.message }));
      sb.release();
      if (sb.fromPool) this.d.pools?.released({ backend: sb.backendName, pack: sb.packName, ...sb.size });
      if (sb.workspace) await (keep ? this.d.workspaces?.keep(id) : this.d.workspaces?.discard(id))?.catch((e: Error) => this.d.log?.('workspace release failed', { id, error: e.message }));
      await unrecorded; // gone before a stop completes: the next start must not find it
    }
  }

  private ready(id: string): Sandbox {
    const sb = this.get(id);
    sb.lastActiveAt = Date.now();
    if (sb.state === 'paused') throw new KilnError('SANDBOX_PAUSED', `sandbox ${id} is paused; resume it with POST /v1/sandboxes/${id}/resume`);
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

  /**
   * A TCP connection to a port on the sandbox's loopback, through its agent (docs/ports.md). Bytes
   * passing count as activity (the idle timeout) and toward the sandbox's port metrics.
   */
  connectPort(id: string, port: number): TcpStream {
    const sb = this.ready(id);
    return sb.inner.agent.connectTcp(port, {
      onBytes: (direction, bytes) => {
        sb.portBytes[direction] += bytes;
        sb.lastActiveAt = Date.now();
      },
    });
  }

  get count(): number {
    return this.sandboxes.size;
  }

  /**
   * Stops the service's side and deletes every sandbox, or with `keepSandboxes` (the service
   * process's graceful stop) lets those whose backend can keep them run on for the next start
   * (Backend.reattach) and deletes the rest.
   */
  /** Stops every sandbox, or detaches those that can outlive the service; answers the detached ids. */
  async close(keepSandboxes = false): Promise<Set<string>> {
    this.closing = true;
    clearInterval(this.healthTimer);
    this.admission.close();
    // A paused sandbox holds nothing but its state on disk: it stays there for the next start.
    for (const sb of this.sandboxes.values()) if (sb.state === 'paused') this.pauses.forget(sb);
    const keep = keepSandboxes;
    const detached = new Set<string>();
    await Promise.allSettled(
      [...this.sandboxes.values()].map((sb) => {
        if (!(keep && sb.inner.detach && sb.state === 'ready')) return this.delete(sb.id, 'service stopped');
        detached.add(sb.id);
        return this.detach(sb);
      }),
    );
    await this.d.network?.close(detached).catch((e: Error) => this.d.log?.('network teardown failed', { error: e.message }));
    return detached;
  }

  /** A sandbox's network audit trail (GET /v1/sandboxes/:id/network/events); a sandbox without a network has none. */
  async networkEvents(id: string, ownerKeyId: string | undefined, after?: number, limit?: number): Promise<NetworkEventsAnswer> {
    const store = this.d.journal?.store;
    if (!this.sandboxes.has(id) && store && this.d.network) {
      // Gone: its trail as the store kept it.
      await this.d.journal!.flush().catch(() => undefined);
      const rec = await store.sandbox(id);
      if (rec && (ownerKeyId === undefined || rec.ownerKeyId === ownerKeyId)) {
        const had = rec.metadata.network as { policy: NetworkPolicyName; allow: string[] } | undefined;
        return this.d.network.pastEvents(id, had ?? { policy: 'none', allow: [] }, after, limit);
      }
    }
    this.get(id, ownerKeyId);
    const a = await this.d.network?.events(id, after, limit);
    return a ?? { policy: 'none', events: [], counters: { bytesOut: 0, bytesIn: 0, refused: 0 }, proposal: { policy: 'allowlist', allow: [] } };
  }

  /** At start, after reattach(): the networks of the sandboxes taken over come back; an earlier run's other leftovers go. */
  async restoreNetworks(): Promise<void> {
    const n = this.d.network;
    if (!n) return;
    const r = await n.restore(new Set(this.sandboxes.keys()));
    for (const id of r.restored) {
      const sb = this.sandboxes.get(id);
      if (sb) sb.network = n.describe(id);
    }
    if (r.removed.length) this.d.log?.('start-up scan (network) removed leftovers', { removed: r.removed });
  }

  private async detach(sb: Sandbox): Promise<void> {
    this.sandboxes.delete(sb.id);
    sb.ttlTimer?.clear();
    sb.idleTimer?.clear();
    sb.state = 'stopping'; // requests still arriving are refused (SANDBOX_GONE) rather than half-served
    try {
      await sb.inner.detach!();
    } finally {
      sb.release();
    }
  }

  /** Writes the sandbox's record for the next start (a failure is logged: the sandbox runs on, unkept). */
  private keep(sb: Sandbox): Promise<void> {
    return this.kept.save(sb).catch((e: Error) => this.d.log?.('sandbox record not written; it will not survive a restart', { id: sb.id, error: e.message }));
  }

  /**
   * At start, before the scan: takes over the sandboxes an earlier run of the service left
   * running (same id, owner, TTL, labels, env); records whose sandbox died meanwhile end as lost,
   * with the reason, in the event trail; a live sandbox without a record is a true orphan and goes.
   */
  async reattach(ownerOf: (keyId: string) => Owner | 'revoked' | 'unknown'): Promise<{ reattached: string[]; lost: { id: string; reason: string }[]; ms: number }> {
    const t0 = performance.now();
    const alive = new Map<string, BackendSandbox>();
    const lost = new Map<string, string>();
    for (const b of this.d.backends.values()) {
      const r = await b.reattach?.().catch((e: Error) => ({ alive: [], lost: [{ id: '', reason: e.message }] }));
      for (const sb of r?.alive ?? []) alive.set(sb.id, sb);
      for (const l of r?.lost ?? []) if (l.id) lost.set(l.id, l.reason);
    }
    const { records, unreadable } = await this.kept.list();
    const reattached: string[] = [];
    const ended: { id: string; reason: string }[] = unreadable.map((id) => ({ id, reason: 'its record is unreadable' }));
    for (const rec of records) {
      const inner = alive.get(rec.id);
      alive.delete(rec.id);
      const owner = rec.ownerKeyId ? ownerOf(rec.ownerKeyId) : undefined;
      const why = !inner ? (lost.get(rec.id) ?? `the ${rec.backend} backend has no such sandbox`) : owner === 'revoked' ? 'its API key was revoked' : undefined;
      if (why) {
        await inner?.destroy().catch(() => undefined);
        await this.kept.remove(rec.id);
        this.d.journal?.record({ type: 'sandbox.ended', id: rec.id, state: 'failed', at: new Date(), reason: `lost: ${why}` });
        this.d.journal?.record({ type: 'event', event: { sandboxId: rec.id, at: new Date(), kind: 'deleted', data: { reason: `lost across a restart of the service: ${why}` } } });
        ended.push({ id: rec.id, reason: why });
        continue;
      }
      const known = owner === 'unknown' ? { keyId: rec.ownerKeyId!, limits: {} } : owner === 'revoked' ? undefined : owner;
      this.adopt(rec, inner!, known);
      reattached.push(rec.id);
    }
    // Live but never recorded (a pool member, a create cut short): nobody can reach it.
    await Promise.allSettled([...alive.values()].map((sb) => sb.destroy()));
    return { reattached, lost: ended, ms: Math.round(performance.now() - t0) };
  }

  private adopt(rec: KeptRecord, inner: BackendSandbox, owner: Owner | undefined): void {
    const sb = new Sandbox(rec.id, rec.backend, rec.pack, rec.packEnv, rec.env, rec.size, inner, rec.readyMs, rec.fromPool, 0);
    sb.createdAt = new Date(rec.createdAt);
    sb.expiresAt = new Date(rec.expiresAt);
    sb.owner = owner;
    sb.labels = rec.labels;
    sb.idleTimeoutSec = rec.idleTimeoutSec;
    sb.workspace = rec.workspace;
    // Counted like any sandbox; a host or key limit lowered meanwhile does not evict it.
    let unreserve = (): void => undefined;
    if (owner) {
      try {
        unreserve = this.ownerUsage.reserve(owner, { memoryMib: rec.size.memoryMib, ttlSec: 0 });
      } catch {
        /* over the key's limits now: kept, not counted */
      }
    }
    const slot = this.admission.tryAcquire();
    this.register(sb, () => {
      unreserve();
      slot?.();
    });
    this.recordEvent(sb, 'restored', { reason: 'service restarted; the sandbox and its processes were kept', reattachMs: inner.details.reattachMs });
  }

  private pausesHost(): Pauses {
    const d = this.d;
    return new Pauses({
      config: d.config,
      packs: d.packs,
      get pools() {
        return d.pools;
      },
      log: d.log,
      admission: this.admission,
      ownerUsage: this.ownerUsage,
      get: (id, ownerKeyId) => this.get(id, ownerKeyId),
      has: (id) => this.sandboxes.has(id),
      add: (sb) => this.sandboxes.set(sb.id, sb),
      drop: (id) => this.sandboxes.delete(id),
      backend: (name) => this.backend(name),
      register: (sb, release) => this.register(sb, release),
      startOnBackend: (...a) => this.startOnBackend(...a),
      recordEvent: (sb, kind, data) => this.recordEvent(sb, kind, data),
      delete: (id, reason) => this.delete(id, reason),
      record: (w) => d.journal?.record(w),
      node: d.node ?? 'local',
      networkDown: async (sb) => {
        if (sb.network) await d.network?.detach(sb.id);
      },
      networkUp: async (sb, inner) => {
        if (!sb.network || !d.network) return;
        const request = sb.networkRequest ?? { policy: sb.network.policy, allow: sb.network.allow, learn: sb.network.learn };
        const policy = d.network.check(request);
        if (policy) sb.network = await d.network.attach(sb.id, inner, policy, request);
      },
      // A paused sandbox is found again from its snapshot record, not by reattach; a resumed one
      // runs again and gets its restart record back.
      stateChanged: (sb) => {
        if (!this.d.backends.get(sb.backendName)?.reattach) return;
        if (sb.state === 'paused') void this.kept.remove(sb.id).catch(() => undefined);
        else void this.keep(sb);
      },
    });
  }

  // The event trail: each call queues a write (an array push); the journal flushes off this path.

  /**
   * A fork run leaves the trail and usage of a one-shot sandbox (created, its exec, deleted) under
   * its own id, recorded once it has answered (a run the runner refused leaves none: it runs in a
   * sandbox of its own, which records itself).
   */
  private recordForkRun(sb: Sandbox, r: ExecOutcome | undefined, e?: unknown): void {
    if (!this.d.journal) return;
    this.recordCreated(sb, { forked: true });
    this.recordExec(sb, false)(r, e);
    this.recordEnded(sb, 'run finished');
  }

  private recordCreated(sb: Sandbox, extra: Record<string, unknown> = {}): void {
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
        metadata: {
          ...extra,
          fromPool: sb.fromPool,
          readyMs: sb.readyMs,
          ...(sb.workspace ? { workspace: sb.workspace } : {}),
          ...(sb.idleTimeoutSec ? { idleTimeoutSec: sb.idleTimeoutSec } : {}),
          ...(sb.network ? { network: { policy: sb.network.policy, allow: sb.network.allow } } : {}),
        },
        state: sb.state,
        createdAt: sb.createdAt,
        expiresAt: sb.expiresAt,
      },
    });
    this.recordEvent(sb, 'created', { ...extra, fromPool: sb.fromPool, readyMs: sb.readyMs });
    if (sb.owner) j.record({ type: 'usage', keyId: sb.owner.keyId, usage: { sandboxesCreated: 1, execs: 0, execMs: 0 } });
  }

  private recordEnded(sb: Sandbox, reason: string): void {
    this.d.journal?.record({ type: 'sandbox.ended', id: sb.id, state: sb.state === 'failed' ? 'failed' : 'deleted', at: new Date(), reason });
    this.recordEvent(sb, 'deleted', { reason });
  }

  /** Public for the workspace review routes (workspace.approved, workspace.rejected). */
  recordEvent(sb: Sandbox, kind: SandboxEventKind, data: Record<string, unknown>): void {
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

/** How long a pack's runs start sandboxes of their own after a runner failed one. */
const NO_FORK_MS = 60_000;

export function newId(): string {
  return `sb-${randomBytes(8).toString('hex')}`;
}
