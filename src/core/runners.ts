/**
 * Runners for fork runs (issue 15; agent/zygote_linux.go). A runner is a namespace sandbox whose
 * agent started the pack's interpreter as a zygote before dropping its privileges; each one-shot
 * run it serves is forked by that zygote into namespaces, a root, /dev, /proc and a loopback of its
 * own, so a run costs a fork and a few mounts instead of a sandbox start and an interpreter start.
 *
 * A runner serves one run at a time (the run's memory and CPU limits are the runner's, exactly as
 * a one-shot sandbox's), is never listed nor reachable through the API, and goes back to the idle
 * list only when its run was forked (the agent says so: `forked`); any other outcome (a fallback
 * to a plain exec, an error, an agent that stopped answering) deletes it. Idle runners are kept up
 * to `maxIdle` per shape, retired after `maxRuns` runs or `maxAgeMs`, and started ahead of demand
 * up to `prestart` per shape.
 */
import type { BackendSandbox } from './backend.js';

export interface RunnerKey {
  pack: string;
  cpus: number;
  memoryMib: number;
  diskMib: number;
}

export interface RunnersOptions {
  start: (key: RunnerKey, signal?: AbortSignal) => Promise<BackendSandbox>;
  /** Idle runners kept per shape (more are deleted when they come back). */
  maxIdle: number;
  /** A runner is deleted after this many runs... */
  maxRuns: number;
  /** ...or once it is this old. */
  maxAgeMs: number;
  /** Runners started ahead of demand, per shape. */
  prestart?: Array<{ key: RunnerKey; count: number }>;
  log?: (msg: string, fields?: Record<string, unknown>) => void;
}

interface Runner {
  sandbox: BackendSandbox;
  bornAt: number;
  runs: number;
  dead: boolean;
}

export interface RunnerStats {
  key: RunnerKey;
  idle: number;
  busy: number;
  hits: number;
  misses: number;
  retired: number;
}

interface Shape {
  key: RunnerKey;
  idle: Runner[];
  busy: number;
  starting: number;
  hits: number;
  misses: number;
  retired: number;
}

export interface Borrowed {
  sandbox: BackendSandbox;
  /** Whether an idle runner served it (false: one was started for it). */
  warm: boolean;
  /** Hands it back: `reusable` only when the run was forked and nothing else ran in it. */
  giveBack(reusable: boolean): void;
}

function keyId(k: RunnerKey): string {
  return `${k.pack}/${k.cpus}cpu/${k.memoryMib}MiB/${k.diskMib}MiB`;
}

export class Runners {
  private readonly shapes = new Map<string, Shape>();
  private closed = false;
  private readonly pending = new Set<Promise<unknown>>();
  private sweepTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: RunnersOptions) {}

  start(): void {
    this.sweepTimer = setInterval(() => this.sweep(), Math.max(1000, Math.min(this.o.maxAgeMs / 4, 60_000)));
    this.sweepTimer.unref();
    for (const { key, count } of this.o.prestart ?? []) {
      const shape = this.shape(key);
      for (let i = 0; i < Math.min(count, this.o.maxIdle); i++) this.startIdle(shape);
    }
  }

  /** An idle runner of the shape, or a new one (started on this request's path). */
  async borrow(key: RunnerKey, signal?: AbortSignal): Promise<Borrowed> {
    if (this.closed) throw new Error('runners are closed');
    const shape = this.shape(key);
    let r: Runner | undefined;
    while ((r = shape.idle.pop()) && (r.dead || this.tooOld(r))) this.retire(shape, r);
    const warm = r !== undefined;
    if (r) shape.hits++;
    else {
      shape.misses++;
      r = this.track(await this.o.start(key, signal));
    }
    shape.busy++;
    const runner = r;
    let given = false;
    return {
      sandbox: runner.sandbox,
      warm,
      giveBack: (reusable) => {
        if (given) return;
        given = true;
        shape.busy--;
        runner.runs++;
        if (reusable && !this.closed && !runner.dead && !this.tooOld(runner) && shape.idle.length < this.o.maxIdle) shape.idle.push(runner);
        else this.retire(shape, runner);
      },
    };
  }

  stats(): RunnerStats[] {
    return [...this.shapes.values()].map((s) => ({ key: s.key, idle: s.idle.length, busy: s.busy, hits: s.hits, misses: s.misses, retired: s.retired }));
  }

  private shape(key: RunnerKey): Shape {
    const id = keyId(key);
    let s = this.shapes.get(id);
    if (!s) {
      s = { key, idle: [], busy: 0, starting: 0, hits: 0, misses: 0, retired: 0 };
      this.shapes.set(id, s);
    }
    return s;
  }

  private track(sandbox: BackendSandbox): Runner {
    const r: Runner = { sandbox, bornAt: Date.now(), runs: 0, dead: false };
    sandbox.onExit(() => {
      r.dead = true;
    });
    return r;
  }

  private tooOld(r: Runner): boolean {
    return r.runs >= this.o.maxRuns || Date.now() - r.bornAt >= this.o.maxAgeMs;
  }

  private retire(shape: Shape, r: Runner): void {
    shape.retired++;
    r.dead = true;
    const p = r.sandbox.destroy().catch((e: Error) => this.o.log?.('runner delete failed', { id: r.sandbox.id, error: e.message }));
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  private startIdle(shape: Shape): void {
    shape.starting++;
    const p = this.o
      .start(shape.key)
      .then(
        (sb) => {
          const r = this.track(sb);
          if (this.closed || shape.idle.length >= this.o.maxIdle) this.retire(shape, r);
          else shape.idle.push(r);
        },
        (e: Error) => this.o.log?.('runner start failed', { pack: shape.key.pack, error: e.message }),
      )
      .finally(() => {
        shape.starting--;
        this.pending.delete(p);
      });
    this.pending.add(p);
  }

  /** Deletes idle runners past their age (and those that died), then tops the prestarted shapes up. */
  private sweep(): void {
    for (const shape of this.shapes.values()) {
      const keep: Runner[] = [];
      for (const r of shape.idle) {
        if (r.dead || this.tooOld(r)) this.retire(shape, r);
        else keep.push(r);
      }
      shape.idle = keep;
    }
    for (const { key, count } of this.o.prestart ?? []) {
      const shape = this.shape(key);
      for (let n = shape.idle.length + shape.starting + shape.busy; n < Math.min(count, this.o.maxIdle); n++) this.startIdle(shape);
    }
  }

  /** Stops starting runners and deletes every idle one; busy ones are deleted when given back. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweepTimer);
    for (const shape of this.shapes.values()) {
      for (const r of shape.idle) this.retire(shape, r);
      shape.idle = [];
    }
    while (this.pending.size) await Promise.allSettled([...this.pending]);
  }
}
