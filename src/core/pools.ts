/**
 * Warm pools keyed by (backend, pack, size). Each key keeps `target` ready sandboxes, refilled in
 * the background with a small concurrency limit so refills never starve requests. `take` is O(1)
 * and hands a sandbox out exactly once: it leaves the pool before it is returned. Members older
 * than `maxAgeMs` are recycled; members that die are dropped.
 */
import type { BackendName, BackendSandbox } from './backend.js';
import type { Metrics } from './metrics.js';

export interface PoolKey {
  backend: BackendName;
  pack: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
}

export interface PoolsOptions {
  targets: Array<{ key: PoolKey; target: number }>;
  start: (key: PoolKey) => Promise<BackendSandbox>;
  maxAgeMs: number;
  /** Sandboxes started at once to refill, while the pools keep up with demand. */
  refillConcurrency: number;
  /**
   * Up to this many at once while demand outruns the refill: a pool missed a request within the
   * last second or holds less than half its target (default refillConcurrency).
   */
  maxRefillConcurrency?: number;
  /**
   * A hit's replacement starts when that sandbox is released (released()) or this long after the
   * hit, whichever is first (default 1000 ms).
   */
  refillAfterHitMs?: number;
  metrics?: Metrics;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

export interface PoolStats {
  key: PoolKey;
  target: number;
  ready: number;
  starting: number;
  hits: number;
  misses: number;
  failures: number;
}

interface Member {
  sandbox: BackendSandbox;
  bornAt: number;
  dead: boolean;
}

class Pool {
  /** Ready members, oldest first; `head` avoids O(n) shifts. */
  members: Array<Member | undefined> = [];
  head = 0;
  starting = 0;
  hits = 0;
  misses = 0;
  failures = 0;
  lastMissAt = Number.NEGATIVE_INFINITY;
  constructor(
    readonly key: PoolKey,
    readonly id: string,
    public target: number,
  ) {}
  get ready(): number {
    return this.members.length - this.head;
  }
  shift(): Member | undefined {
    while (this.head < this.members.length) {
      const m = this.members[this.head];
      this.members[this.head++] = undefined;
      if (this.head > 64 && this.head * 2 > this.members.length) {
        this.members = this.members.slice(this.head);
        this.head = 0;
      }
      if (m && !m.dead) return m;
    }
    return undefined;
  }
}

export function poolKeyId(k: PoolKey): string {
  return `${k.backend}/${k.pack}/${k.cpus}cpu/${k.memoryMib}MiB/${k.diskMib}MiB`;
}

/** See PoolsOptions.refillAfterHitMs. */
const REFILL_AFTER_HIT_MS = 1000;

export class WarmPools {
  private readonly pools = new Map<string, Pool>();
  private inFlight = 0;
  private closed = false;
  private sweepTimer: NodeJS.Timeout | undefined;
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly o: PoolsOptions) {
    for (const { key, target } of o.targets) this.pools.set(poolKeyId(key), new Pool(key, poolKeyId(key), target));
  }

  start(): void {
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(1000, Math.min(this.o.maxAgeMs / 4, 60_000)));
    this.sweepTimer.unref();
    this.refillAll();
  }

  /** A ready sandbox for the key, or undefined (a miss). Never the same sandbox twice. */
  take(key: PoolKey): BackendSandbox | undefined {
    const pool = this.pools.get(poolKeyId(key));
    if (!pool) return undefined;
    const m = pool.shift();
    if (m) pool.hits++;
    else {
      pool.misses++;
      pool.lastMissAt = performance.now();
    }
    this.report(pool);
    if (m) {
      // The replacement waits until the request that took this member is done with it (a
      // one-shot run releases it right after answering), or REFILL_AFTER_HIT_MS for a sandbox
      // that lives on. Starting a sandbox competes for the CPU with that very request: measured
      // on 2 cores under software emulation, a pooled qemu /v1/run took ~390 ms with the refill
      // beside it and ~205 ms after it.
      setTimeout(() => this.refill(pool), this.o.refillAfterHitMs ?? REFILL_AFTER_HIT_MS).unref();
    } else {
      // A miss: the pool is short now. After the current request has answered, though: starting
      // a sandbox forks this process, which would otherwise sit between the miss and its response.
      setImmediate(() => this.refill(pool));
    }
    return m?.sandbox;
  }

  /** The sandbox a hit handed out is gone (deleted): start its replacement now. */
  released(key: PoolKey): void {
    const pool = this.pools.get(poolKeyId(key));
    if (pool) setImmediate(() => this.refill(pool));
  }

  stats(): PoolStats[] {
    return [...this.pools.values()].map((p) => ({ key: p.key, target: p.target, ready: p.ready, starting: p.starting, hits: p.hits, misses: p.misses, failures: p.failures }));
  }

  private refillAll(): void {
    for (const p of this.pools.values()) this.refill(p);
  }

  private refill(pool: Pool): void {
    while (!this.closed && pool.ready + pool.starting < pool.target && this.inFlight < this.concurrency(pool)) {
      pool.starting++;
      this.inFlight++;
      const job = this.o
        .start(pool.key)
        .then(
          (sandbox) => this.add(pool, sandbox),
          (e) => {
            pool.failures++;
            this.o.log?.('warm pool refill failed', { pool: pool.id, error: (e as Error).message });
          },
        )
        .finally(() => {
          pool.starting--;
          this.inFlight--;
          this.pending.delete(job);
          // Back off exponentially (2 s … 60 s) while starts fail, so a missing image does not spin.
          const backoffMs = pool.failures > 0 ? Math.min(60_000, 2000 * 2 ** Math.min(pool.failures - 1, 5)) : 0;
          if (!this.closed) setTimeout(() => this.refillAll(), backoffMs).unref();
        });
      this.pending.add(job);
    }
  }

  /**
   * Refill concurrency follows demand: one sandbox at a time (refillConcurrency) keeps a steady
   * pool full without competing with the requests it serves, but under a burst every request
   * past the pool is a miss that starts its sandbox on the request path anyway; refilling wider
   * then turns those into hits. Measured with 8 clients of /v1/run on 2 cores: ~15% hits at 1.
   */
  private concurrency(pool: Pool): number {
    const max = Math.max(this.o.refillConcurrency, this.o.maxRefillConcurrency ?? this.o.refillConcurrency);
    const behind = pool.ready * 2 < pool.target || performance.now() - pool.lastMissAt < 1000;
    return behind ? max : this.o.refillConcurrency;
  }

  private add(pool: Pool, sandbox: BackendSandbox): void {
    if (this.closed) {
      void sandbox.destroy().catch(() => undefined);
      return;
    }
    const m: Member = { sandbox, bornAt: Date.now(), dead: false };
    sandbox.onExit(() => {
      if (m.dead) return;
      m.dead = true;
      void sandbox.destroy().catch(() => undefined);
    });
    pool.members.push(m);
    pool.failures = 0;
    this.report(pool);
  }

  /** Recycles members past their max age (oldest are at the head). */
  private sweep(): void {
    const now = Date.now();
    for (const pool of this.pools.values()) {
      for (let i = pool.head; i < pool.members.length; i++) {
        const m = pool.members[i];
        if (!m || m.dead || now - m.bornAt < this.o.maxAgeMs) continue;
        m.dead = true;
        void m.sandbox.destroy().catch(() => undefined);
      }
      // Compact so `ready` counts only live members.
      pool.members = pool.members.slice(pool.head).filter((m): m is Member => m !== undefined && !m.dead);
      pool.head = 0;
      this.report(pool);
    }
    this.refillAll();
  }

  private report(pool: Pool): void {
    this.o.metrics?.poolSize.set({ key: pool.id }, pool.ready);
    this.o.metrics?.poolTarget.set({ key: pool.id }, pool.target);
  }

  /** Stops refilling and destroys every member, including those still starting. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweepTimer);
    await Promise.allSettled([...this.pending]);
    const all: Promise<void>[] = [];
    for (const pool of this.pools.values()) {
      for (let m = pool.shift(); m; m = pool.shift()) {
        m.dead = true;
        all.push(m.sandbox.destroy());
      }
    }
    await Promise.allSettled(all);
  }
}
