/**
 * The host's side of `kiln-agent host spawner` (agent/host_spawner_linux.go): one long-lived root
 * helper that starts each namespace sandbox's bwrap. Node's child_process forks the whole service
 * for every spawn (a large process: its page tables are copied, then dropped by the exec) and the
 * child then went through the fd-cleaning wrapper (a Go runtime start of its own); the helper
 * forks a small process instead, holds the sandbox's start-up pipes, writes its PID 1 into the
 * sandbox's cgroups and lets it run, all in one request. Started at first use; it ends at close()
 * or with the service (end of its input), leaving kept sandboxes running.
 */
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { spawnClean } from '../../core/clean-spawn.js';
import { attachLineHelper, type LineHelper } from './line-helper.js';

export interface SpawnRequest {
  path: string;
  /** argv[0] included. */
  argv: string[];
  uid: number;
  gid: number;
  /** A session of its own: not the service's process group (kept sandboxes). */
  setsid: boolean;
  /** Hold the agent's --await-fd 5 until recorded(). */
  await: boolean;
  /** cgroup.procs files the sandbox's PID 1 is written to before it is let run. */
  cgroupProcs: string[];
  /** Everything bwrap and the agent write to stderr until forget(). */
  onStderr: (text: string) => void;
}

interface Event {
  id: number;
  ev: 'started' | 'error' | 'stderr' | 'stderr-end' | 'exit';
  pid?: number;
  child?: number;
  message?: string;
  data?: string;
  code?: number;
  signal?: number;
}

const signalNames = new Map<number, NodeJS.Signals>(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/**
 * One bwrap the helper started: what the backend used of a ChildProcess (pid, exit state, the
 * 'exit' event, kill, unref), with its stderr relayed to the request's onStderr.
 */
export class SpawnedBwrap extends EventEmitter {
  pid: number | undefined;
  sandboxPid = 0;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  /** Resolves when the sandbox's stderr ended (everything it wrote has reached onStderr) or was let go. */
  readonly stderrEnded: Promise<void>;
  private endStderr!: () => void;
  forgotten = false;

  constructor(
    private readonly spawner: Spawner,
    readonly id: number,
    readonly onStderr: (text: string) => void,
  ) {
    super();
    this.stderrEnded = new Promise((r) => {
      this.endStderr = r;
    });
  }

  get exited(): boolean {
    return this.exitCode !== null || this.signalCode !== null;
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.exited) return false;
    return this.spawner.send({ op: 'kill', id: this.id, signal: typeof signal === 'number' ? signal : constants.signals[signal] }, this);
  }

  /** The service has the sandbox's record: its agent may go on (its --await-fd gets one byte). */
  recorded(): void {
    this.spawner.send({ op: 'recorded', id: this.id });
  }

  /**
   * The sandbox is up: what it writes to stderr from now on is dropped here. The helper still
   * reads it (a message per sandbox saved; the agent writes there only when something breaks).
   */
  forget(): void {
    this.forgotten = true;
    this.endStderr();
  }

  /** Nothing of the helper keeps the service's loop alive (it is unref'd as a whole). */
  unref(): void {}

  /** @internal */
  handle(e: Event): void {
    switch (e.ev) {
      case 'stderr':
        if (!this.forgotten) this.onStderr(e.data ?? '');
        return;
      case 'stderr-end':
        this.endStderr();
        return;
      case 'exit':
        this.exited_(e.code ?? null, e.signal !== undefined ? (signalNames.get(e.signal) ?? 'SIGKILL') : null);
        return;
    }
  }

  /** @internal */
  exited_(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.exited) return;
    this.exitCode = code;
    this.signalCode = signal;
    if (code === null && signal === null) this.exitCode = -1; // gone, status unknown (the helper died)
    this.endStderr();
    this.emit('exit', code, signal);
  }
}

interface Pending {
  proc: SpawnedBwrap;
  resolve: (p: SpawnedBwrap) => void;
  reject: (e: Error) => void;
}

export class Spawner {
  private child: ChildProcess | undefined;
  private readonly procs = new Map<number, SpawnedBwrap>();
  private readonly starting = new Map<number, Pending>();
  private next = 1;
  private lines: LineHelper | undefined;

  /** `helper`: the host's kiln-agent (run as root), not a sandbox's copy. */
  constructor(private readonly helper: string) {}

  /** Starts bwrap, places its PID 1 in the cgroups, lets it run; resolves once it runs. */
  spawn(req: SpawnRequest, signal: AbortSignal): Promise<SpawnedBwrap> {
    const id = this.next++;
    const proc = new SpawnedBwrap(this, id, req.onStderr);
    this.procs.set(id, proc);
    return new Promise<SpawnedBwrap>((resolve, reject) => {
      const onAbort = (): void => {
        const p = this.starting.get(id);
        if (!p) return;
        this.starting.delete(id);
        this.holdLoop();
        // Killed by pid once the helper names it; until then the helper's own kill below.
        this.send({ op: 'kill', id, signal: constants.signals.SIGKILL });
        reject(new Error('sandbox start aborted'));
      };
      const done =
        <T>(f: (v: T) => void) =>
        (v: T) => {
          signal.removeEventListener('abort', onAbort);
          this.holdLoop();
          f(v);
        };
      this.starting.set(id, { proc, resolve: done(resolve), reject: done(reject) });
      signal.addEventListener('abort', onAbort, { once: true });
      const { onStderr: _, ...wire } = req;
      if (!this.send({ op: 'spawn', id, ...wire })) {
        this.starting.delete(id);
        this.procs.delete(id);
        const said = this.lines?.stderr().trim();
        done(reject)(new Error(`kiln-agent host spawner is not running${said ? `: ${said}` : ''}`));
      } else this.holdLoop();
    });
  }

  close(): void {
    this.child?.stdin?.end();
    this.child = undefined;
  }

  /**
   * The helper is unref'd (idle between sandboxes, it must not keep the service running), but a
   * start under way waits for its answer: while there is one, its output keeps the loop alive.
   */
  private holdLoop(): void {
    const child = this.child;
    if (!child) return;
    const out = child.stdout as unknown as { ref?: () => void; unref?: () => void } | null;
    if (this.starting.size) {
      child.ref();
      out?.ref?.();
    } else {
      child.unref();
      out?.unref?.();
    }
  }

  /** @internal Writes one request; false when the helper is gone (or cannot start). */
  send(msg: Record<string, unknown>, fallback?: SpawnedBwrap): boolean {
    let child: ChildProcess;
    try {
      child = this.start();
    } catch {
      return false;
    }
    if (!child.stdin?.writable) {
      // The helper died: bwrap was reparented; a kill goes to it by pid.
      if (fallback?.pid && msg.op === 'kill') return tryKill(fallback.pid, msg.signal as number);
      return false;
    }
    child.stdin.write(`${JSON.stringify(msg)}\n`);
    return true;
  }

  private start(): ChildProcess {
    if (this.child) return this.child;
    // Through the fd-cleaning wrapper (once): the helper must not hold what the service inherited
    // either. One P: its work is a few syscalls per sandbox, and on 2 cores a second one measured
    // 1.9 ms of its CPU per sandbox against 1.1 (threads handing work to each other).
    const child = spawnClean(this.helper, ['host', 'spawner'], { stdio: ['pipe', 'pipe', 'pipe'], env: { GOMAXPROCS: '1' } }, this.helper);
    this.child = child;
    this.lines = attachLineHelper(
      'spawner',
      child,
      (m) => this.onEvent(m as Event),
      (err) => {
        if (this.child === child) this.child = undefined;
        for (const p of this.starting.values()) p.reject(err);
        this.starting.clear();
        // Their bwraps run on, reparented: each one's end is found by polling its pid.
        for (const p of this.procs.values()) watchPid(p);
        this.procs.clear();
      },
    );
    return child;
  }

  private onEvent(e: Event): void {
    const proc = this.procs.get(e.id);
    if (!proc) return;
    if (e.pid) proc.pid = e.pid;
    if (e.ev === 'started') {
      proc.sandboxPid = e.child!;
      const p = this.starting.get(e.id);
      this.starting.delete(e.id);
      if (p) {
        p.resolve(proc);
        return;
      }
      // Aborted meanwhile: the sandbox goes with its bwrap.
      tryKill(proc.sandboxPid, constants.signals.SIGKILL);
      proc.kill('SIGKILL');
      return;
    }
    if (e.ev === 'error') {
      const p = this.starting.get(e.id);
      this.starting.delete(e.id);
      // What the sandbox wrote before it failed comes first: the error carries it.
      if (p) void Promise.race([proc.stderrEnded, new Promise((r) => setTimeout(r, 1000))]).then(() => p.reject(new Error(e.message ?? 'the sandbox did not start')));
      if (!e.pid && !proc.pid) this.procs.delete(e.id); // nothing ran: no exit follows
      return;
    }
    proc.handle(e);
    if (e.ev === 'exit') {
      this.procs.delete(e.id);
      const p = this.starting.get(e.id);
      this.starting.delete(e.id);
      p?.reject(new Error(`bwrap exited (${proc.signalCode ?? `code ${proc.exitCode}`}) before starting the sandbox`));
    }
  }
}

function tryKill(pid: number, signal: number): boolean {
  if (!(pid > 0)) return false; // never 0 or -1: those are process groups (the service's own)
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

function watchPid(p: SpawnedBwrap): void {
  if (p.exited) return;
  if (!p.pid) {
    p.exited_(null, null);
    return;
  }
  const t = setInterval(() => {
    // Gone, or a zombie its new parent has not reaped yet: either way it ran its course.
    let state = '';
    try {
      const stat = readFileSync(`/proc/${p.pid}/stat`, 'utf8');
      state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    } catch {
      /* gone */
    }
    if (!state || state === 'Z' || state === 'X') {
      clearInterval(t);
      p.exited_(null, null);
    }
  }, 100);
  t.unref();
}
