/**
 * An in-memory Backend for unit tests of the core (SandboxManager, WarmPools) without root: it
 * keeps the Backend contract of src/core/backend.ts (create honours its signal and refuses after
 * close; destroy is idempotent, ends running execs and fails later agent calls; onExit fires when
 * a sandbox dies on its own; close destroys every sandbox it still owns) and runs execs from a
 * script the test supplies. Nothing here is started: every sandbox is a few objects in a Map.
 */

import { availabilityFrom, type Backend, type BackendAvailability, type BackendName, type BackendSandbox, type CreateOptions, type SandboxSpec, type SandboxUsage } from '../../src/core/backend.js';
import { KilnError } from '../../src/core/errors.js';
import type { PackCatalog, PackImage, PackInfo } from '../../src/core/packs.js';
import type { AgentClient, ExecHandle, ExecHandlers } from '../../src/protocol/agent-client.js';
import type { ExecRequest, ExecResult } from '../../src/protocol/messages.js';

/** What one exec does: its output and exit, after `delayMs`, or never (`hang`) until cancelled or the sandbox dies. */
export interface ScriptedRun {
  stdout?: string;
  stderr?: string;
  exitCode?: number;
  signal?: string;
  delayMs?: number;
  hang?: boolean;
}

export type ExecScript = (req: ExecRequest, sandbox: MemorySandbox) => ScriptedRun;

const CAPABILITIES = { snapshots: false, separateKernel: false, multipleUids: false, workspace: 'mount' as const, maxCpus: 64, maxMemoryMib: 1 << 20 };

const gone = (id: string): KilnError => new KilnError('SANDBOX_GONE', `in-memory sandbox ${id} is destroyed`);

/** The agent side of one in-memory sandbox: files in a Map, execs from the script. */
class MemoryAgent {
  readonly files = new Map<string, Buffer>();
  /** While true, ping never answers (a hung guest). */
  hung = false;
  private readonly running = new Set<(e: KilnError) => void>();
  private dead = false;

  constructor(
    private readonly sb: MemorySandbox,
    private readonly script: ExecScript,
  ) {}

  kill(): void {
    this.dead = true;
    for (const fail of [...this.running]) fail(gone(this.sb.id));
  }

  get closed(): boolean {
    return this.dead;
  }

  /** Like an agent that predates the prestart op: the warm-up falls back to running an empty file. */
  async prestart(): Promise<void> {
    if (this.dead) throw gone(this.sb.id);
    throw new KilnError('AGENT_ERROR', 'the in-memory agent cannot prestart a program');
  }

  async ping(signal?: AbortSignal): Promise<{ rttMs: number; agentNowMs: number }> {
    if (this.dead) throw gone(this.sb.id);
    if (this.hung) {
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(new KilnError('TIMEOUT', 'ping: no answer')), { once: true }));
    }
    return { rttMs: 0.1, agentNowMs: Date.now() };
  }

  exec(req: ExecRequest, handlers: ExecHandlers = {}, options: { signal?: AbortSignal } = {}): ExecHandle {
    const t0 = performance.now();
    let cancel!: () => void;
    const result = new Promise<ExecResult>((resolve, reject) => {
      if (this.dead) {
        reject(gone(this.sb.id));
        return;
      }
      this.sb.execs.push(req);
      const run = this.script(req, this.sb);
      let timer: NodeJS.Timeout | undefined;
      const fail = (e: KilnError): void => {
        clearTimeout(timer);
        this.running.delete(fail);
        reject(e);
      };
      this.running.add(fail);
      const finish = (r: ScriptedRun, signalName: string | null = r.signal ?? null): void => {
        clearTimeout(timer);
        this.running.delete(fail);
        if (r.stdout) handlers.onStdout?.(Buffer.from(r.stdout));
        if (r.stderr) handlers.onStderr?.(Buffer.from(r.stderr));
        resolve({
          exitCode: signalName ? null : (r.exitCode ?? 0),
          signal: signalName,
          timedOut: false,
          durationMs: performance.now() - t0,
          outputTruncated: false,
          cpuUserMs: 0,
          cpuSystemMs: 0,
        } as ExecResult);
      };
      cancel = () => finish({}, 'SIGKILL');
      options.signal?.addEventListener('abort', cancel, { once: true });
      handlers.onStarted?.(1000 + this.sb.execs.length);
      if (!run.hang) timer = setTimeout(() => finish(run), run.delayMs ?? 0);
    });
    return { result, writeStdin: async () => undefined, closeStdin: () => undefined, signal: () => cancel(), resize: () => undefined, cancel: () => cancel() };
  }

  async writeFile(path: string, data: Buffer | AsyncIterable<Buffer>, opts: { maxBytes: number }): Promise<{ bytes: number }> {
    if (this.dead) throw gone(this.sb.id);
    const chunks: Buffer[] = [];
    if (Buffer.isBuffer(data)) chunks.push(data);
    else for await (const c of data) chunks.push(c);
    const buf = Buffer.concat(chunks);
    if (buf.length > opts.maxBytes) throw new KilnError('PAYLOAD_TOO_LARGE', `${path}: ${buf.length} bytes, limit ${opts.maxBytes}`);
    this.files.set(path, buf);
    return { bytes: buf.length };
  }

  async readFile(path: string, sink: (c: Buffer) => void): Promise<{ bytes: number }> {
    if (this.dead) throw gone(this.sb.id);
    const buf = this.files.get(path);
    if (!buf) throw new KilnError('FILE_NOT_FOUND', `${path}: no such file`);
    sink(buf);
    return { bytes: buf.length };
  }
}

export class MemorySandbox implements BackendSandbox {
  readonly details: Record<string, unknown>;
  readonly execs: ExecRequest[] = [];
  readonly memoryAgent: MemoryAgent;
  destroyCalls = 0;
  destroyed = false;
  private readonly exitListeners: Array<(reason: string) => void> = [];

  constructor(
    readonly id: string,
    readonly spec: SandboxSpec,
    script: ExecScript,
    private readonly onDestroyed: (sb: MemorySandbox) => void,
  ) {
    this.memoryAgent = new MemoryAgent(this, script);
    this.details = { memory: true, pack: spec.pack.name };
  }

  /** The core only calls what MemoryAgent implements (ping, exec, files); a test that reaches further fails loudly. */
  get agent(): AgentClient {
    return this.memoryAgent as unknown as AgentClient;
  }

  async usage(): Promise<SandboxUsage> {
    return { memoryBytes: 0, oomKills: 0, pids: this.destroyed ? 0 : 1 };
  }

  onExit(listener: (reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  /** The sandbox dies on its own (a crash): its agent stops and onExit listeners hear why. */
  crash(reason: string): void {
    this.memoryAgent.kill();
    for (const l of this.exitListeners) l(reason);
  }

  async destroy(): Promise<void> {
    this.destroyCalls++;
    if (this.destroyed) return;
    this.destroyed = true;
    this.memoryAgent.kill();
    this.onDestroyed(this);
  }
}

export interface MemoryBackendOptions {
  name?: BackendName;
  script?: ExecScript;
  /** How long each create takes (honouring its signal meanwhile). */
  createDelayMs?: number;
}

export class MemoryBackend implements Backend {
  readonly name: BackendName;
  /** Sandboxes created and not yet destroyed. */
  readonly live = new Map<string, MemorySandbox>();
  /** Every sandbox ever created, in order. */
  readonly all: MemorySandbox[] = [];
  script: ExecScript;
  createDelayMs: number;
  /** The next this-many creates fail (a boot failure). */
  failCreates = 0;
  closed = false;

  constructor(o: MemoryBackendOptions = {}) {
    this.name = o.name ?? 'namespace';
    this.script = o.script ?? (() => ({ exitCode: 0 }));
    this.createDelayMs = o.createDelayMs ?? 0;
  }

  async probe(): Promise<BackendAvailability> {
    return availabilityFrom(this.name, [{ name: 'open', ok: !this.closed, detail: this.closed ? 'closed' : 'in memory' }], CAPABILITIES, { memory: true });
  }

  async create(spec: SandboxSpec, options: CreateOptions): Promise<BackendSandbox> {
    if (this.closed) throw new KilnError('SHUTTING_DOWN', 'in-memory backend is closed');
    if (this.createDelayMs > 0) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, this.createDelayMs);
        options.signal?.addEventListener(
          'abort',
          () => {
            clearTimeout(t);
            reject(new KilnError('TIMEOUT', 'create aborted'));
          },
          { once: true },
        );
      });
    }
    options.signal?.throwIfAborted();
    if (this.closed) throw new KilnError('SHUTTING_DOWN', 'in-memory backend closed during create');
    if (this.failCreates > 0) {
      this.failCreates--;
      throw new KilnError('BOOT_FAILED', `in-memory sandbox ${spec.id} failed to start (scripted)`);
    }
    const sb = new MemorySandbox(
      spec.id,
      spec,
      (...a) => this.script(...a),
      (s) => this.live.delete(s.id),
    );
    this.live.set(sb.id, sb);
    this.all.push(sb);
    return sb;
  }

  async scan(): Promise<{ removed: string[] }> {
    return { removed: [] };
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([...this.live.values()].map((s) => s.destroy()));
  }
}

/** A pack catalogue of in-memory packs (each "built"). */
export function memoryPacks(names: string[] = ['python', 'shell']): PackCatalog {
  const info = (name: string): PackInfo => {
    if (!names.includes(name)) throw new KilnError('UNKNOWN_PACK', `no pack "${name}"`);
    return {
      name,
      description: `${name} (in memory)`,
      env: { PACK: name },
      imageReady: true,
      run: { fileName: name === 'python' ? 'main.py' : 'main.sh', command: [name === 'python' ? 'python3' : 'sh', '{file}'], projectCommand: ['sh', '{entrypoint}'] },
    };
  };
  return {
    list: async () => names.map(info),
    refresh: async () => undefined,
    get: async (name) => info(name),
    image: async (name): Promise<PackImage> => {
      const p = info(name);
      return { name, imagePath: `/memory/${name}.sqfs`, hash: `hash-${name}`, env: p.env, run: p.run };
    },
  };
}
