/**
 * Runs commands in a sandbox through its agent: applies defaults and limits, merges environments
 * (pack < sandbox < exec), collects or streams output, and adds host-side facts (OOM kills).
 */
import type { ChunkSink, ExecHandle, ExecHandlers, OutputStream } from '../protocol/agent-client.js';
import type { ExecResult } from '../protocol/messages.js';
import type { SandboxLimits } from './config.js';
import { KilnError } from './errors.js';
import type { Metrics } from './metrics.js';
import type { Sandbox } from './sandbox.js';

export interface ExecOptions {
  /** A string runs through /bin/sh -c; an array is argv. */
  cmd: string | string[];
  stdin?: string | Buffer;
  env?: Record<string, string>;
  cwd?: string;
  uid?: number;
  timeoutMs?: number;
  /** Caps stdout and stderr each; up to the operator's KILN_MAX_OUTPUT_BYTES. */
  maxOutputBytes?: number;
  /** Small files written just before the command starts, in the same agent round trip. */
  files?: Array<{ path: string; data: Buffer }>;
  /** A runner's run (manager.forkRun): forked or refused, never run as a plain exec there. */
  fork?: boolean;
}

export interface ExecStreamHandlers {
  /** May return a promise: the program is held back until the chunk has been passed on. */
  onStdout?: ChunkSink;
  onStderr?: ChunkSink;
  onStarted?: (pid: number) => void;
  /** Bytes were dropped from the middle of a stream: what follows on it is its tail. */
  onTruncated?: (stream: OutputStream, droppedBytes: number) => void;
}

/**
 * An interactive session's output cap, per stream. Memory does not depend on it (flow control
 * holds at most a window per stream); it bounds what one session can make the service relay.
 */
export const INTERACTIVE_MAX_OUTPUT_BYTES = 1024 * 1024 * 1024;

export interface ExecOutcome extends ExecResult {
  /** Collected output (empty when the caller streamed it through handlers). */
  stdout: Buffer;
  stderr: Buffer;
  oomKilled: boolean;
}

export interface InteractiveOptions {
  cmd: string | string[];
  env?: Record<string, string>;
  cwd?: string;
  tty?: { cols: number; rows: number };
  timeoutMs?: number;
}

export interface InteractiveExec {
  handle: ExecHandle;
  done: Promise<ExecOutcome>;
}

export class ExecRunner {
  constructor(
    private readonly limits: SandboxLimits,
    private readonly metrics?: Metrics,
  ) {}

  argv(cmd: string | string[]): string[] {
    if (typeof cmd === 'string') {
      if (cmd.length === 0) throw new KilnError('INVALID_REQUEST', 'cmd is empty: pass a shell string or an argv array');
      return ['/bin/sh', '-c', cmd];
    }
    if (cmd.length === 0 || cmd[0] === '') throw new KilnError('INVALID_REQUEST', 'cmd argv is empty: its first element is the program to run');
    return cmd;
  }

  /** The exec timeout to use; one over the host's limit is refused naming both. */
  timeout(ms: number | undefined): number {
    const t = ms ?? this.limits.defaultExecTimeoutMs;
    if (!Number.isInteger(t) || t <= 0 || t > this.limits.maxExecTimeoutMs) {
      throw new KilnError('INVALID_REQUEST', `timeoutMs must be an integer from 1 to ${this.limits.maxExecTimeoutMs} on this host (got ${t})`, {
        details: { field: 'timeoutMs', value: t, minimum: 1, maximum: this.limits.maxExecTimeoutMs },
      });
    }
    return t;
  }

  /** The cap a request asked for, checked against the operator's maximum (never clamped silently). */
  outputCap(requested: number | undefined): number {
    const { defaultOutputBytes, maxOutputBytes } = this.limits;
    if (requested === undefined) return defaultOutputBytes;
    if (requested > maxOutputBytes) {
      throw new KilnError(
        'INVALID_REQUEST',
        `maxOutputBytes ${requested} is over this server's limit of ${maxOutputBytes} bytes per stream (KILN_MAX_OUTPUT_BYTES): ask for at most ${maxOutputBytes}; a truncated stream still keeps its head and its tail`,
        {
          details: { field: 'maxOutputBytes', value: requested, limit: maxOutputBytes },
        },
      );
    }
    return requested;
  }

  async run(sb: Sandbox, o: ExecOptions, handlers: ExecStreamHandlers = {}, signal?: AbortSignal): Promise<ExecOutcome> {
    const maxOutputBytes = this.outputCap(o.maxOutputBytes);
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    const streaming = handlers.onStdout !== undefined || handlers.onStderr !== undefined;
    const agentHandlers: ExecHandlers = streaming ? handlers : { onStdout: (c) => stdout.push(c), onStderr: (c) => stderr.push(c), onStarted: handlers.onStarted, onTruncated: handlers.onTruncated };
    const stdin = o.stdin === undefined ? undefined : Buffer.isBuffer(o.stdin) ? o.stdin : Buffer.from(o.stdin);
    const outcome = await this.execute(
      sb,
      {
        argv: this.argv(o.cmd),
        env: { ...sb.packEnv, ...sb.env, ...o.env },
        cwd: o.cwd,
        uid: o.uid,
        timeoutMs: this.timeout(o.timeoutMs),
        maxOutputBytes,
        stdin: stdin !== undefined,
        files: o.files?.map((f) => ({ path: f.path, data: f.data.toString('base64') })),
        ...(o.fork ? { fork: true } : {}),
      },
      agentHandlers,
      signal,
      (h) => {
        if (stdin === undefined) return;
        // Fed alongside, not before, the result: a program that never reads its stdin still ends.
        if (stdin.length > 0) h.writeStdin(stdin).catch(() => undefined);
        h.closeStdin();
      },
    );
    return { ...outcome, stdout: Buffer.concat(stdout), stderr: Buffer.concat(stderr) };
  }

  /** Starts an exec with stdin and an optional tty; resolves once the agent stream is open. */
  async interactive(sb: Sandbox, o: InteractiveOptions, handlers: ExecHandlers): Promise<InteractiveExec> {
    let gotHandle!: (h: ExecHandle) => void;
    const handleReady = new Promise<ExecHandle>((resolve) => {
      gotHandle = resolve;
    });
    const done = this.execute(
      sb,
      {
        argv: this.argv(o.cmd),
        env: { ...sb.packEnv, ...sb.env, ...o.env },
        cwd: o.cwd,
        timeoutMs: o.timeoutMs === undefined ? this.limits.maxExecTimeoutMs : this.timeout(o.timeoutMs),
        maxOutputBytes: INTERACTIVE_MAX_OUTPUT_BYTES,
        stdin: true,
        tty: o.tty,
      },
      handlers,
      undefined,
      gotHandle,
    ).then((r) => ({ ...r, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0) }));
    const handle = await Promise.race([
      handleReady,
      done.then(() => {
        throw new KilnError('EXEC_FAILED', 'the command ended before it started');
      }),
    ]);
    return { handle, done };
  }

  private async execute(
    sb: Sandbox,
    req: Parameters<Sandbox['inner']['agent']['exec']>[0],
    handlers: ExecHandlers,
    signal: AbortSignal | undefined,
    withHandle: (h: ExecHandle) => void | Promise<void>,
  ): Promise<Omit<ExecOutcome, 'stdout' | 'stderr'>> {
    sb.execsRunning++;
    const t0 = performance.now();
    try {
      const h = sb.inner.agent.exec(req, handlers, { signal });
      await withHandle(h);
      const result = await h.result;
      this.metrics?.observeExec(sb.backendName, performance.now() - t0);
      return { ...result, oomKilled: result.signal === 'SIGKILL' && (await sb.sawNewOomKill()) };
    } finally {
      sb.execsRunning--;
    }
  }
}
