/**
 * Stateful code contexts: a long-lived interpreter per context inside a sandbox (Python through
 * IPython, JavaScript through one Node.js process), driven over the stdin/stdout of an interactive
 * exec (code-drivers.ts has the drivers and their line protocol). A context keeps its variables
 * and imports between runs; runs on one context wait for each other. A context whose interpreter
 * ended (killed after a timeout it ignored, the exec's own limit) is started again on its next
 * run, with its state gone. Contexts live as long as their sandbox and are not kept over a restart
 * of the service.
 */
import { randomUUID } from 'node:crypto';
import { NODE_DRIVER, PYTHON_DRIVER } from './code-drivers.js';
import { KilnError } from './errors.js';
import type { InteractiveExec } from './exec.js';
import type { SandboxManager } from './manager.js';

export const CODE_LANGUAGES = ['python', 'javascript'] as const;
export type CodeLanguage = (typeof CODE_LANGUAGES)[number];

export interface CodeContextInfo {
  id: string;
  language: CodeLanguage;
  cwd: string;
  createdAt: string;
}

/** A MIME bundle: 'text/plain', 'text/html', 'image/png' (base64), … as IPython formats them. */
export type MimeBundle = Record<string, unknown>;

export type CodeEvent =
  | { type: 'number_of_executions'; executionCount: number }
  | { type: 'stdout' | 'stderr'; text: string; timestamp: string }
  | { type: 'result'; isMainResult: boolean; data: MimeBundle }
  | { type: 'error'; name: string; value: string; traceback: string };

export interface RunCodeOptions {
  env?: Record<string, string>;
  /** Interrupts the run after this long (SIGINT, then the interpreter is killed 3 s later). */
  timeoutMs?: number;
  /** Aborting interrupts the run the same way (a client that went away). */
  signal?: AbortSignal;
}

export interface RunCodeOutcome {
  executionCount?: number;
  timedOut: boolean;
  interrupted: boolean;
}

const READY_TIMEOUT_MS = 60_000;
const KILL_GRACE_MS = 3_000;
const RS = 0x1e;

/** E2B's spellings too: js, JS, ts is refused (no TypeScript kernel here). */
export function normalizeLanguage(language: string | undefined): CodeLanguage {
  const l = (language ?? 'python').trim().toLowerCase();
  if (l === 'python' || l === 'python3' || l === 'py') return 'python';
  if (l === 'javascript' || l === 'js' || l === 'node') return 'javascript';
  throw new KilnError('UNSUPPORTED_OPTION', `language "${language}" has no code context here: use ${CODE_LANGUAGES.join(' or ')}`, {
    details: { field: 'language', value: language, supported: [...CODE_LANGUAGES] },
  });
}

interface Pending {
  id: number;
  onEvent: (e: CodeEvent) => unknown;
  resolve: (count: number | undefined) => void;
  executionCount?: number;
}

/** One interpreter process. */
class Interpreter {
  private ex?: InteractiveExec;
  private buf: Buffer = Buffer.alloc(0);
  private pending?: Pending;
  private nextId = 1;
  private readyWait?: { resolve: () => void; reject: (e: Error) => void };
  private startupErr = '';
  alive = false;
  exitInfo = '';

  constructor(
    private readonly manager: SandboxManager,
    private readonly sandboxId: string,
    readonly language: CodeLanguage,
    readonly cwd: string,
  ) {}

  async start(): Promise<void> {
    const cmd = this.language === 'python' ? ['python3', '-u', '-c', PYTHON_DRIVER] : ['node', '-e', NODE_DRIVER];
    const ready = new Promise<void>((resolve, reject) => {
      this.readyWait = { resolve, reject };
    });
    this.ex = await this.manager.interactive(this.sandboxId, { cmd, cwd: this.cwd }, { onStdout: (c) => this.onStdout(c), onStderr: (c) => this.onStderr(c) });
    this.alive = true;
    this.ex.done.then(
      (r) => this.ended(`the interpreter ended (exit code ${r.exitCode}${r.signal ? `, ${r.signal}` : ''}${r.oomKilled ? ', out of memory' : ''})`),
      (e: unknown) => this.ended(`the interpreter ended: ${e instanceof Error ? e.message : String(e)}`),
    );
    const timer = setTimeout(() => this.readyWait?.reject(new KilnError('TIMEOUT', `the ${this.language} interpreter did not start within ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS);
    try {
      await ready;
    } catch (e) {
      this.kill();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private ended(why: string): void {
    this.alive = false;
    this.exitInfo = why;
    const detail = this.startupErr.trim().split('\n').slice(-3).join(' ');
    this.readyWait?.reject(
      new KilnError('EXEC_FAILED', `the ${this.language} interpreter did not start: ${why}${detail ? `: ${detail}` : ''}`, {
        details: { language: this.language },
      }),
    );
    this.readyWait = undefined;
    const p = this.pending;
    if (p) {
      this.pending = undefined;
      p.onEvent({ type: 'error', name: 'ContextDied', value: `${why}; the context's state is lost and its next run starts a new interpreter`, traceback: '' });
      p.resolve(p.executionCount);
    }
  }

  private onStderr(c: Buffer): void {
    if (this.readyWait) this.startupErr = (this.startupErr + c.toString('utf8')).slice(-4096);
    this.pending?.onEvent({ type: 'stderr', text: c.toString('utf8'), timestamp: new Date().toISOString() });
  }

  /** Promises the consumer returned for the chunk being parsed: the chunk's credit waits for them. */
  private held: Promise<unknown>[] = [];

  private deliver(e: CodeEvent): void {
    const r = this.pending?.onEvent(e);
    if (r instanceof Promise) this.held.push(r);
  }

  /** A slow client holds the interpreter back (flow control down to the agent) instead of the service buffering. */
  private onStdout(c: Buffer): undefined | Promise<unknown> {
    this.parse(c);
    if (this.held.length === 0) return undefined;
    const held = this.held;
    this.held = [];
    return Promise.all(held);
  }

  private parse(c: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    for (;;) {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0) break;
      const line = this.buf.subarray(0, nl);
      this.buf = this.buf.subarray(nl + 1);
      const rs = line.indexOf(RS);
      if (rs < 0) {
        this.raw(`${line.toString('utf8')}\n`);
        continue;
      }
      if (rs > 0) this.raw(line.subarray(0, rs).toString('utf8'));
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line.subarray(rs + 1).toString('utf8'));
      } catch {
        this.raw(`${line.subarray(rs + 1).toString('utf8')}\n`);
        continue;
      }
      this.message(msg);
    }
  }

  /** What a child process wrote straight to the descriptor: the running execution's stdout. */
  private raw(text: string): void {
    if (text) this.deliver({ type: 'stdout', text, timestamp: new Date().toISOString() });
  }

  private message(m: Record<string, unknown>): void {
    switch (m.type) {
      case 'ready':
        this.readyWait?.resolve();
        this.readyWait = undefined;
        return;
      case 'fatal':
        this.startupErr += String(m.message ?? '');
        return;
    }
    const p = this.pending;
    if (!p || m.id !== p.id) return; // output of a run already given up on (interrupted)
    switch (m.type) {
      case 'number_of_executions':
        p.executionCount = Number(m.execution_count);
        this.deliver({ type: 'number_of_executions', executionCount: p.executionCount });
        return;
      case 'stdout':
      case 'stderr':
        this.deliver({ type: m.type, text: String(m.text ?? ''), timestamp: String(m.timestamp ?? new Date().toISOString()) });
        return;
      case 'result':
        this.deliver({ type: 'result', isMainResult: m.main === true, data: (m.data ?? {}) as MimeBundle });
        return;
      case 'error':
        this.deliver({ type: 'error', name: String(m.name ?? 'Error'), value: String(m.value ?? ''), traceback: String(m.traceback ?? '') });
        return;
      case 'done':
        this.pending = undefined;
        p.resolve(p.executionCount);
        return;
    }
  }

  async run(code: string, o: RunCodeOptions, onEvent: (e: CodeEvent) => unknown): Promise<RunCodeOutcome> {
    const ex = this.ex;
    if (!ex || !this.alive) throw new KilnError('SANDBOX_GONE', this.exitInfo || 'the interpreter is not running');
    const id = this.nextId++;
    let timedOut = false;
    let interrupted = false;
    let killTimer: NodeJS.Timeout | undefined;
    // After a timeout's own error, the interrupt's (KeyboardInterrupt, SIGINT) is noise: dropped.
    const pass = (e: CodeEvent): unknown => (timedOut && e.type === 'error' ? undefined : onEvent(e));
    const finished = new Promise<number | undefined>((resolve) => {
      this.pending = { id, onEvent: pass, resolve };
    });
    const interrupt = (): void => {
      if (interrupted) return;
      interrupted = true;
      try {
        ex.handle.signal('SIGINT');
      } catch {
        // the interpreter is already gone: `ended` answers the run
      }
      killTimer = setTimeout(() => this.kill(), KILL_GRACE_MS);
    };
    const timer =
      o.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            onEvent({ type: 'error', name: 'TimeoutError', value: `the execution did not finish within ${o.timeoutMs} ms and was interrupted`, traceback: '' });
            interrupt();
          }, o.timeoutMs);
    const onAbort = (): void => interrupt();
    o.signal?.addEventListener('abort', onAbort, { once: true });
    if (o.signal?.aborted) interrupt();
    await ex.handle.writeStdin(Buffer.from(`${JSON.stringify({ id, code, env: o.env ?? {} })}\n`));
    const executionCount = await finished;
    clearTimeout(timer);
    clearTimeout(killTimer);
    o.signal?.removeEventListener('abort', onAbort);
    return { executionCount, timedOut, interrupted };
  }

  kill(): void {
    try {
      this.ex?.handle.cancel();
    } catch {
      // already ended
    }
  }
}

interface Context {
  info: CodeContextInfo;
  interp?: Interpreter;
  /** Runs (and restarts) on this context, one at a time. */
  chain: Promise<unknown>;
}

export class CodeContexts {
  private readonly bySandbox = new Map<string, Map<string, Context>>();
  /** The default context per language of each sandbox (E2B's /execute without a context id). */
  private readonly defaults = new Map<string, Map<CodeLanguage, Promise<CodeContextInfo>>>();

  constructor(private readonly manager: SandboxManager) {}

  private contexts(sandboxId: string): Map<string, Context> {
    this.manager.get(sandboxId); // SANDBOX_NOT_FOUND
    let m = this.bySandbox.get(sandboxId);
    if (!m) {
      m = new Map();
      this.bySandbox.set(sandboxId, m);
    }
    return m;
  }

  private context(sandboxId: string, contextId: string): Context {
    const c = this.contexts(sandboxId).get(contextId);
    if (!c) throw new KilnError('CONTEXT_NOT_FOUND', `sandbox "${sandboxId}" has no code context "${contextId}"; list them with GET /v1/sandboxes/${sandboxId}/contexts`);
    return c;
  }

  /** Starts an interpreter and waits until it is ready (IPython's import takes about a second). */
  async create(sandboxId: string, o: { language?: string; cwd?: string } = {}): Promise<CodeContextInfo> {
    const language = normalizeLanguage(o.language);
    this.manager.get(sandboxId);
    const cwd = o.cwd ?? '/workspace';
    const info: CodeContextInfo = { id: randomUUID(), language, cwd, createdAt: new Date().toISOString() };
    const interp = new Interpreter(this.manager, sandboxId, language, cwd);
    await interp.start();
    this.contexts(sandboxId).set(info.id, { info, interp, chain: Promise.resolve() });
    return info;
  }

  list(sandboxId: string): CodeContextInfo[] {
    this.prune();
    return [...this.contexts(sandboxId).values()].map((c) => c.info);
  }

  get(sandboxId: string, contextId: string): CodeContextInfo {
    return this.context(sandboxId, contextId).info;
  }

  /** The sandbox's default context for a language, created on first use. */
  async defaultContext(sandboxId: string, language?: string): Promise<CodeContextInfo> {
    const l = normalizeLanguage(language);
    let d = this.defaults.get(sandboxId);
    if (!d) {
      d = new Map();
      this.defaults.set(sandboxId, d);
    }
    const have = d.get(l);
    if (have) {
      const info = await have.catch(() => undefined);
      if (info && this.contexts(sandboxId).has(info.id)) return info;
    }
    const made = this.create(sandboxId, { language: l });
    d.set(l, made);
    made.catch(() => d.delete(l));
    return made;
  }

  async delete(sandboxId: string, contextId: string): Promise<void> {
    const c = this.context(sandboxId, contextId);
    this.contexts(sandboxId).delete(contextId);
    c.interp?.kill();
  }

  /** A new interpreter in place of the old one: same id, no state. Waits for a run in progress. */
  async restart(sandboxId: string, contextId: string): Promise<CodeContextInfo> {
    const c = this.context(sandboxId, contextId);
    const step = c.chain.then(async () => {
      c.interp?.kill();
      c.interp = undefined;
      const interp = new Interpreter(this.manager, sandboxId, c.info.language, c.info.cwd);
      await interp.start();
      c.interp = interp;
    });
    c.chain = step.catch(() => undefined);
    await step;
    return c.info;
  }

  /** Runs code in the context, passing its events on as they come. */
  async run(sandboxId: string, contextId: string, code: string, o: RunCodeOptions, onEvent: (e: CodeEvent) => unknown): Promise<RunCodeOutcome> {
    const c = this.context(sandboxId, contextId);
    const step = c.chain.then(async () => {
      if (!this.contexts(sandboxId).has(contextId)) throw new KilnError('CONTEXT_NOT_FOUND', `code context "${contextId}" was deleted`);
      if (!c.interp?.alive) {
        const interp = new Interpreter(this.manager, sandboxId, c.info.language, c.info.cwd);
        await interp.start();
        c.interp = interp;
      }
      return c.interp.run(code, o, onEvent);
    });
    c.chain = step.catch(() => undefined);
    return step;
  }

  /** Forgets the contexts of sandboxes that are gone. */
  private prune(): void {
    for (const id of this.bySandbox.keys()) {
      if (!this.manager.peek(id)) {
        this.bySandbox.delete(id);
        this.defaults.delete(id);
      }
    }
  }
}
