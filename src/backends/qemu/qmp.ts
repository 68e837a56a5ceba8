/**
 * A small QMP client over the VM's Unix socket: one command at a time in order, replies matched
 * by id, events ignored unless someone waits for them.
 */
import { createConnection, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export class QmpError extends Error {
  constructor(
    message: string,
    readonly qmpClass?: string,
  ) {
    super(message);
    this.name = 'QmpError';
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly eventWaiters = new Set<{ name: string; resolve: (data: unknown) => void }>();
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => this.onData(d));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.fail(new QmpError('QMP connection closed')));
  }

  /** Connects (retrying while QEMU creates the socket) and negotiates capabilities. */
  static async connect(path: string, options: { timeoutMs: number; signal?: AbortSignal }): Promise<QmpClient> {
    const deadline = Date.now() + options.timeoutMs;
    for (;;) {
      options.signal?.throwIfAborted();
      try {
        const socket = await connectOnce(path);
        const client = new QmpClient(socket);
        await client.execute('qmp_capabilities');
        return client;
      } catch (e) {
        if (Date.now() > deadline) throw new QmpError(`cannot reach QMP at ${path}: ${(e as Error).message}`);
        // The socket appears once QEMU has initialised (~25 ms after spawn): poll finely, a failed
        // connect() on a Unix path costs microseconds.
        await sleep(1);
      }
    }
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedError) return Promise.reject(this.closedError);
    const id = String(this.nextId++);
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id })}\n`);
    });
  }

  /** Resolves with the event's data the next time QEMU emits `name`. */
  waitEvent(name: string): Promise<unknown> {
    return new Promise((resolve) => this.eventWaiters.add({ name, resolve }));
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (!line) continue;
      let msg: { id?: string; return?: unknown; error?: { class?: string; desc?: string }; event?: string; data?: unknown; QMP?: unknown };
      try {
        msg = JSON.parse(line);
      } catch {
        continue;
      }
      if (msg.event) {
        for (const w of [...this.eventWaiters]) {
          if (w.name === msg.event) {
            this.eventWaiters.delete(w);
            w.resolve(msg.data);
          }
        }
        continue;
      }
      if (msg.id === undefined) continue; // the greeting
      const p = this.pending.get(msg.id);
      if (!p) continue;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new QmpError(msg.error.desc ?? 'QMP error', msg.error.class));
      else p.resolve(msg.return);
    }
  }

  private fail(e: Error): void {
    if (this.closedError) return;
    this.closedError = e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

function connectOnce(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', reject);
  });
}
