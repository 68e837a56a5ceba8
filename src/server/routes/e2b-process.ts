/**
 * envd's process.Process service on kiln's interactive exec: each Start is one agent exec with
 * stdin open (closed at once unless the client asked for stdin), its output fanned out to the
 * Start stream and to any Connect streams. A process outlives the stream that started it (E2B's
 * background commands, disconnect()); it ends with the program, kiln's exec timeout (the client's
 * Connect timeout when it sends one) or the sandbox. Silent streams get keepalive events.
 */
import { create } from '@bufbuild/protobuf';
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from '@connectrpc/connect';
import type { ExecOutcome } from '../../core/exec.js';
import type { Sandbox } from '../../core/sandbox.js';
import {
  type ConnectResponse,
  ConnectResponseSchema,
  type Process,
  type ProcessConfig,
  ProcessConfigSchema,
  type ProcessEvent,
  ProcessEventSchema,
  ProcessInfoSchema,
  type ProcessSelector,
  Signal,
  type StartResponse,
  StartResponseSchema,
} from '../../e2b/gen/process/process_pb.js';
import type { ExecHandle } from '../../protocol/agent-client.js';
import type { KilnService } from '../service.js';

/** A stream's queue over this many bytes holds the program back until the client reads. */
const QUEUE_HIGH_WATER_BYTES = 1024 * 1024;
const DEFAULT_KEEPALIVE_MS = 30_000;

interface Subscriber {
  queue: ProcessEvent[];
  bytes: number;
  wake: (() => void) | undefined;
  drained: Array<() => void>;
}

interface Proc {
  pid: number;
  tag: string | undefined;
  config: ProcessConfig;
  handle: ExecHandle;
  subscribers: Set<Subscriber>;
  ended: boolean;
}

/** The running processes of each sandbox, by guest pid. */
export class ProcessTable {
  private readonly bySandbox = new Map<string, Map<number, Proc>>();

  of(sandboxId: string): Map<number, Proc> {
    let m = this.bySandbox.get(sandboxId);
    if (!m) {
      m = new Map();
      this.bySandbox.set(sandboxId, m);
    }
    return m;
  }

  find(sandboxId: string, sel: ProcessSelector | undefined): Proc {
    const procs = this.bySandbox.get(sandboxId);
    let p: Proc | undefined;
    if (sel?.selector.case === 'pid') p = procs?.get(sel.selector.value);
    else if (sel?.selector.case === 'tag') p = [...(procs?.values() ?? [])].find((x) => x.tag === sel.selector.value);
    if (!p || p.ended) throw new ConnectError(`process ${JSON.stringify(sel?.selector.value ?? null)} not found`, Code.NotFound);
    return p;
  }

  drop(sandboxId: string, pid: number): void {
    const m = this.bySandbox.get(sandboxId);
    m?.delete(pid);
    if (m?.size === 0) this.bySandbox.delete(sandboxId);
  }
}

/**
 * `sandboxGone`: called when a process ended because its sandbox went away; the caller cuts the
 * sandbox's open streams, as a dead envd would, so the client's health check says what happened.
 */
export function processService(svc: KilnService, table: ProcessTable, sandboxOf: (ctx: HandlerContext) => Sandbox, sandboxGone: (sandboxId: string) => void): Partial<ServiceImpl<typeof Process>> {
  return {
    async *start(req, ctx): AsyncIterable<StartResponse> {
      const sb = sandboxOf(ctx);
      const cfg = req.process ?? create(ProcessConfigSchema, { cmd: '' });
      if (!cfg.cmd) throw new ConnectError('process.cmd is empty', Code.InvalidArgument);
      const sub = subscriber();
      const subscribers = new Set([sub]);
      const broadcast = (ev: ProcessEvent, bytes = 0): undefined | Promise<void> => {
        let wait: Promise<void> | undefined;
        for (const s of subscribers) {
          s.queue.push(ev);
          s.bytes += bytes;
          s.wake?.();
          if (s.bytes > QUEUE_HIGH_WATER_BYTES) wait = new Promise((resolve) => s.drained.push(resolve));
        }
        return wait;
      };
      const data = (stream: 'stdout' | 'stderr' | 'pty') => (chunk: Buffer) =>
        broadcast(create(ProcessEventSchema, { event: { case: 'data', value: { output: { case: stream, value: new Uint8Array(chunk) } } } }), chunk.length);
      const tty = req.pty?.size ? { cols: req.pty.size.cols || 80, rows: req.pty.size.rows || 24 } : undefined;
      const maxMs = svc.manager.limits.maxExecTimeoutMs;
      const timeoutMs = ctx.timeoutMs();
      let pid = 0;
      let started!: () => void;
      const startedP = new Promise<void>((resolve) => {
        started = resolve;
      });
      let ex: Awaited<ReturnType<KilnService['manager']['interactive']>>;
      try {
        ex = await svc.manager.interactive(
          sb.id,
          {
            cmd: [cfg.cmd, ...cfg.args],
            env: { ...cfg.envs },
            cwd: cfg.cwd || undefined,
            tty,
            timeoutMs: timeoutMs === undefined || timeoutMs <= 0 ? maxMs : Math.min(Math.ceil(timeoutMs), maxMs),
          },
          {
            onStarted: (p) => {
              pid = p;
              started();
            },
            onStdout: data(tty ? 'pty' : 'stdout'),
            onStderr: data('stderr'),
          },
        );
        // The agent's stream opens before the program has a pid: wait for it (or for a program that could not start).
        await Promise.race([startedP, ex.done]);
      } catch (e) {
        throw toConnectError(e);
      }
      if (req.stdin === false && !tty) ex.handle.closeStdin();
      const proc: Proc = { pid, tag: req.tag, config: cfg, handle: ex.handle, subscribers, ended: false };
      table.of(sb.id).set(pid, proc);
      const ended = (ev: ProcessEvent): void => {
        proc.ended = true;
        table.drop(sb.id, pid);
        broadcast(ev);
      };
      ex.done.then(
        (r) => ended(endEvent(r)),
        (e: unknown) => {
          if (!svc.manager.peek(sb.id) || sb.state !== 'ready') {
            proc.ended = true;
            table.drop(sb.id, pid);
            sandboxGone(sb.id);
            return;
          }
          ended(create(ProcessEventSchema, { event: { case: 'end', value: { exitCode: -1, exited: false, status: 'error', error: toConnectError(e).rawMessage } } }));
        },
      );
      yield create(StartResponseSchema, { event: create(ProcessEventSchema, { event: { case: 'start', value: { pid } } }) });
      for await (const ev of follow(proc, sub, ctx)) yield create(StartResponseSchema, { event: ev });
    },

    async *connect(req, ctx): AsyncIterable<ConnectResponse> {
      const sb = sandboxOf(ctx);
      const proc = table.find(sb.id, req.process);
      const sub = subscriber();
      proc.subscribers.add(sub);
      yield create(ConnectResponseSchema, { event: create(ProcessEventSchema, { event: { case: 'start', value: { pid: proc.pid } } }) });
      for await (const ev of follow(proc, sub, ctx)) yield create(ConnectResponseSchema, { event: ev });
    },

    async list(_req, ctx) {
      const sb = sandboxOf(ctx);
      return { processes: [...table.of(sb.id).values()].filter((p) => !p.ended).map((p) => create(ProcessInfoSchema, { pid: p.pid, tag: p.tag, config: p.config })) };
    },

    async sendInput(req, ctx) {
      const proc = table.find(sandboxOf(ctx).id, req.process);
      const input = req.input?.input;
      if (input?.case === 'stdin' || input?.case === 'pty') await proc.handle.writeStdin(Buffer.from(input.value)).catch((e: unknown) => Promise.reject(toConnectError(e)));
      return {};
    },

    async closeStdin(req, ctx) {
      table.find(sandboxOf(ctx).id, req.process).handle.closeStdin();
      return {};
    },

    async sendSignal(req, ctx) {
      const proc = table.find(sandboxOf(ctx).id, req.process);
      if (req.signal === Signal.SIGKILL) proc.handle.signal('SIGKILL');
      else if (req.signal === Signal.SIGTERM) proc.handle.signal('SIGTERM');
      else throw new ConnectError(`signal ${req.signal} is not one envd sends (SIGTERM, SIGKILL)`, Code.InvalidArgument);
      return {};
    },

    async update(req, ctx) {
      const proc = table.find(sandboxOf(ctx).id, req.process);
      const size = req.pty?.size;
      if (size && size.cols > 0 && size.rows > 0) proc.handle.resize(Math.min(size.cols, 1000), Math.min(size.rows, 1000));
      return {};
    },
  };
}

function subscriber(): Subscriber {
  return { queue: [], bytes: 0, wake: undefined, drained: [] };
}

/**
 * The events one stream sends after its start event: output, then the end; a keepalive when
 * nothing came for the client's Keepalive-Ping-Interval (seconds; at most 30). A stream whose
 * client left stops following (the process goes on).
 */
async function* follow(proc: Proc, sub: Subscriber, ctx: HandlerContext): AsyncIterable<ProcessEvent> {
  const asked = Number(ctx.requestHeader.get('keepalive-ping-interval'));
  const keepaliveMs = Number.isFinite(asked) && asked > 0 ? Math.min(asked * 1000, DEFAULT_KEEPALIVE_MS) : DEFAULT_KEEPALIVE_MS;
  const release = (): void => {
    if (sub.bytes > QUEUE_HIGH_WATER_BYTES) return;
    for (const r of sub.drained.splice(0)) r();
  };
  try {
    for (;;) {
      const ev = sub.queue.shift();
      if (ev) {
        if (ev.event.case === 'data') {
          const o = ev.event.value.output;
          sub.bytes -= o.value?.length ?? 0;
          release();
        }
        yield ev;
        if (ev.event.case === 'end') return;
        continue;
      }
      if (ctx.signal.aborted) return;
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const woke = await new Promise<boolean>((resolve) => {
        sub.wake = () => resolve(true);
        timer = setTimeout(() => resolve(false), keepaliveMs);
        onAbort = () => resolve(true);
        ctx.signal.addEventListener('abort', onAbort, { once: true });
      });
      clearTimeout(timer);
      if (onAbort) ctx.signal.removeEventListener('abort', onAbort);
      sub.wake = undefined;
      if (!woke && sub.queue.length === 0) yield create(ProcessEventSchema, { event: { case: 'keepalive', value: {} } });
    }
  } finally {
    proc.subscribers.delete(sub);
    sub.bytes = 0;
    for (const r of sub.drained.splice(0)) r();
  }
}

/** envd's end event: Go's ProcessState strings ("exit status 1", "signal: killed"). */
function endEvent(r: ExecOutcome): ProcessEvent {
  const exited = r.exitCode !== null;
  const status = exited ? `exit status ${r.exitCode}` : `signal: ${signalWord(r.signal)}`;
  const error = r.timedOut ? `${status} (the command's timeout ran out)` : exited && r.exitCode === 0 ? undefined : status;
  return create(ProcessEventSchema, { event: { case: 'end', value: { exitCode: exited ? r.exitCode! : -1, exited, status, error } } });
}

function signalWord(signal: string | null): string {
  const words: Record<string, string> = { SIGKILL: 'killed', SIGTERM: 'terminated', SIGINT: 'interrupt', SIGHUP: 'hangup', SIGSEGV: 'segmentation fault', SIGABRT: 'aborted', SIGPIPE: 'broken pipe' };
  return signal ? (words[signal] ?? signal) : 'unknown';
}

/** A kiln error as the Connect error the client maps to its own (NotFound, InvalidArgument, …). */
export function toConnectError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const err = e as { status?: number; message?: string; code?: string };
  const status = typeof err.status === 'number' ? err.status : 500;
  const code =
    status === 400
      ? Code.InvalidArgument
      : status === 401
        ? Code.Unauthenticated
        : status === 403
          ? Code.PermissionDenied
          : status === 404
            ? Code.NotFound
            : status === 409
              ? Code.FailedPrecondition
              : status === 413 || status === 429
                ? Code.ResourceExhausted
                : status === 503
                  ? Code.Unavailable
                  : status === 504
                    ? Code.DeadlineExceeded
                    : Code.Internal;
  return new ConnectError(code === Code.Internal && !err.code ? 'internal error' : (err.message ?? 'internal error'), code);
}
