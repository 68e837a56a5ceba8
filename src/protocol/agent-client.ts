/**
 * Host side of protocol v2: one AgentClient per connection, many concurrent streams on it, each
 * flow-controlled in both directions (flow.ts). Every frame from the agent is untrusted: lengths
 * are capped by the decoder, windows by flow.ts, and JSON payloads are schema-checked before use.
 * Agent errors become KilnErrors exactly once (agent-errors.ts).
 */
import { randomBytes } from 'node:crypto';
import { KilnError } from '../core/errors.js';
import { abortedError, agentError, requestFrame } from './agent-errors.js';
import { TcpStream, type TcpStreamOptions } from './agent-tcp.js';
import type { AgentIo, ChunkSink, ConnectOptions, ExecHandle, ExecHandlers, NetConfigRequest, OutputStream } from './agent-types.js';
import { parseWindow, RecvWindow, SendWindow, windowPayload } from './flow.js';
import { decodeJson, encodeFrame, encodeJsonFrame, type Frame, FrameDecoder, FrameType } from './frames.js';
import {
  type ExecRequest,
  type ExecResult,
  type FsEntry,
  type HelloResult,
  PROTOCOL_VERSION,
  type PrestartRequest,
  type SyncResult,
  type TransferResult,
  validateExecResult,
  validateFsList,
  validateHello,
  validatePing,
  validatePrestart,
  validateStarted,
  validateSync,
  validateTransfer,
  validateTruncated,
} from './messages.js';

export type { AgentIo, ChunkSink, ConnectOptions, ExecHandle, ExecHandlers, OutputStream } from './agent-types.js';

const DATA_CHUNK_BYTES = 256 * 1024;
const ANSWERED = Symbol('answered');

/** The agent's default output cap per stream (docs/protocol.md, exec `maxOutputBytes`). */
const AGENT_DEFAULT_MAX_OUTPUT_BYTES = 1024 * 1024;

interface StreamState {
  /** For data frames the result may be a promise: the frame's credit waits for it. */
  onFrame(frame: Frame): unknown;
  fail(err: KilnError): void;
  send: SendWindow;
  recv: RecvWindow;
}

const FLOW_TYPES = new Set<number>([FrameType.STDOUT, FrameType.STDERR, FrameType.DATA, FrameType.EOF]);

/** Random bytes a restored guest gets to reseed its RNG with. */
const SYNC_ENTROPY_BYTES = 64;

export class AgentClient {
  hello!: HelloResult;
  private nextStream = 1;
  private readonly streams = new Map<number, StreamState>();
  private readonly decoder = new FrameDecoder();
  private closedError: KilnError | undefined;
  private readonly closeListeners = new Set<(err: KilnError) => void>();
  private drain: Promise<void> | undefined;

  private constructor(private readonly io: AgentIo) {
    io.readable.on('data', (chunk: Buffer) => this.onData(chunk));
    io.readable.on('end', () => this.shutdown(new KilnError('SANDBOX_GONE', 'the sandbox agent closed its connection; the sandbox has stopped')));
    io.readable.on('error', (e) => this.shutdown(new KilnError('SANDBOX_GONE', `agent connection failed: ${e.message}`)));
    io.writable.on('error', (e) => this.shutdown(new KilnError('SANDBOX_GONE', `agent connection failed: ${e.message}`)));
  }

  /** Wraps a connected byte stream and performs the version handshake. */
  static async connect(io: AgentIo, options: ConnectOptions = {}): Promise<AgentClient> {
    const client = new AgentClient(io);
    const timeoutMs = options.timeoutMs ?? 10_000;
    // A ref'd timer (AbortSignal.timeout is unref'd): a silent agent must not leave us pending forever.
    const deadline = new AbortController();
    const timer = deadline.signal;
    const handle = setTimeout(() => deadline.abort(new Error('handshake deadline')), timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timer]) : timer;
    try {
      const hello = options.sync
        ? { op: 'hello', versions: [PROTOCOL_VERSION], sync: { wallClockMs: Date.now(), entropy: randomBytes(SYNC_ENTROPY_BYTES).toString('base64') } }
        : { op: 'hello', versions: [PROTOCOL_VERSION] };
      const raw = await client.request(hello, { signal });
      if (!validateHello(raw)) throw new KilnError('AGENT_PROTOCOL', 'agent hello reply is malformed');
      if (raw.version !== PROTOCOL_VERSION) throw new KilnError('AGENT_PROTOCOL', `agent speaks protocol v${raw.version}; this host needs v${PROTOCOL_VERSION}`);
      client.hello = options.sync && !raw.sync ? { ...raw, sync: await client.sync(Date.now(), randomBytes(SYNC_ENTROPY_BYTES), signal) } : raw;
      return client;
    } catch (e) {
      client.close();
      if (timer.aborted && !options.signal?.aborted) throw new KilnError('BOOT_FAILED', `agent did not answer the handshake within ${timeoutMs} ms`, { cause: e });
      throw e;
    } finally {
      clearTimeout(handle);
    }
  }

  get closed(): boolean {
    return this.closedError !== undefined;
  }

  onClose(listener: (err: KilnError) => void): () => void {
    if (this.closedError) {
      queueMicrotask(() => listener(this.closedError!));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  close(): void {
    this.shutdown(new KilnError('SANDBOX_GONE', 'the sandbox was closed'));
  }

  async ping(signal?: AbortSignal): Promise<{ rttMs: number; agentNowMs: number }> {
    const t0 = performance.now();
    const raw = await this.request({ op: 'ping' }, { signal });
    if (!validatePing(raw)) throw new KilnError('AGENT_PROTOCOL', 'agent ping reply is malformed');
    return { rttMs: performance.now() - t0, agentNowMs: raw.nowMs };
  }

  async sync(wallClockMs: number, entropy: Buffer, signal?: AbortSignal): Promise<SyncResult> {
    const raw = await this.request({ op: 'sync', wallClockMs, entropy: entropy.toString('base64') }, { signal });
    if (!validateSync(raw)) throw new KilnError('AGENT_PROTOCOL', 'agent sync reply is malformed');
    return raw;
  }

  /** Starts a program that waits for its run (see PrestartRequest); resolves once it is started. */
  async prestart(req: PrestartRequest, signal?: AbortSignal): Promise<{ pid: number }> {
    const raw = await this.request({ op: 'prestart', ...req }, { signal });
    if (!validatePrestart(raw)) throw new KilnError('AGENT_PROTOCOL', 'agent prestart reply is malformed');
    return raw;
  }

  async list(path: string): Promise<FsEntry[]> {
    const raw = await this.request({ op: 'fs.list', path });
    if (!validateFsList(raw)) throw new KilnError('AGENT_PROTOCOL', 'agent fs.list reply is malformed');
    return raw.entries;
  }

  exec(req: ExecRequest, handlers: ExecHandlers = {}, options: { signal?: AbortSignal } = {}): ExecHandle {
    const stream = this.allocStream();
    // Encoded before anything is registered: a request too big for one frame leaves nothing behind.
    const request = requestFrame(stream, { op: 'exec', ...req });
    // The host's own budget per stream (head and tail together fit the cap), whatever the agent
    // does with its copy of it; what an agent sends beyond it is dropped and counted.
    const cap = req.maxOutputBytes ?? AGENT_DEFAULT_MAX_OUTPUT_BYTES;
    const left = { stdout: cap, stderr: cap };
    const cut = { stdout: 0, stderr: 0 };
    const output = (stream: OutputStream, sink: ChunkSink | undefined, chunk: Buffer): unknown => {
      if (chunk.length > left[stream]) {
        cut[stream] += chunk.length - left[stream];
        chunk = chunk.subarray(0, left[stream]);
      }
      left[stream] -= chunk.length;
      if (chunk.length > 0) return sink?.(chunk);
    };
    const result = new Promise<ExecResult>((resolve, reject) => {
      this.register(stream, {
        onFrame: (f) => {
          switch (f.type) {
            case FrameType.STDOUT:
              return output('stdout', handlers.onStdout, f.payload);
            case FrameType.STDERR:
              return output('stderr', handlers.onStderr, f.payload);
            case FrameType.EVENT: {
              const ev = decodeJson(f);
              if (validateTruncated(ev)) handlers.onTruncated?.(ev.stream, ev.droppedBytes);
              else if (validateStarted(ev) && ev.event === 'started' && typeof ev.pid === 'number') handlers.onStarted?.(ev.pid);
              break;
            }
            case FrameType.RESULT: {
              this.endStream(stream);
              const raw = decodeJson(f);
              if (!validateExecResult(raw)) return reject(new KilnError('AGENT_PROTOCOL', 'agent exec result is malformed'));
              const stdoutDroppedBytes = (raw.stdoutDroppedBytes ?? 0) + cut.stdout;
              const stderrDroppedBytes = (raw.stderrDroppedBytes ?? 0) + cut.stderr;
              resolve({ ...raw, stdoutDroppedBytes, stderrDroppedBytes, outputTruncated: raw.outputTruncated || stdoutDroppedBytes + stderrDroppedBytes > 0 });
              break;
            }
            case FrameType.ERROR:
              this.endStream(stream);
              reject(agentError(f));
              break;
            default:
              this.protocolViolation(`unexpected frame 0x${f.type.toString(16)} on exec stream`);
          }
        },
        fail: (err) => {
          this.endStream(stream);
          reject(err);
        },
      });
    });
    result.catch(() => undefined);
    const cancel = (): void => {
      if (this.streams.has(stream)) this.send(encodeFrame(FrameType.CANCEL, stream));
    };
    options.signal?.addEventListener('abort', cancel, { once: true });
    result.finally(() => options.signal?.removeEventListener('abort', cancel)).catch(() => undefined);
    this.send(request);
    if (options.signal?.aborted) cancel(); // aborted before it started: 'abort' will not fire again
    // Stdin goes out in order, each chunk as the agent's window allows.
    let stdin: Promise<unknown> = Promise.resolve();
    const queue = (type: typeof FrameType.STDIN | typeof FrameType.EOF, chunk: Buffer): Promise<void> => {
      const sent = stdin.then(() => this.sendData(stream, type, chunk)).then(() => undefined);
      stdin = sent.catch(() => undefined);
      return sent;
    };
    return {
      result,
      writeStdin: (chunk) => queue(FrameType.STDIN, chunk),
      closeStdin: () => {
        queue(FrameType.EOF, EMPTY).catch(() => undefined);
      },
      signal: (name) => this.send(encodeJsonFrame(FrameType.CONTROL, stream, { signal: name })),
      resize: (cols, rows) => this.send(encodeJsonFrame(FrameType.CONTROL, stream, { resize: { cols, rows } })),
      cancel,
    };
  }

  /**
   * A byte stream to a TCP port on the sandbox's loopback (docs/protocol.md `tcp.connect`), with
   * backpressure both ways. Data written before the agent has connected waits in the agent's queue;
   * a port nobody listens on ends the stream with PORT_UNREACHABLE.
   */
  connectTcp(port: number, opts: TcpStreamOptions & { host?: '127.0.0.1' | '::1' } = {}): TcpStream {
    const stream = this.allocStream();
    const body: { op: string } = { op: 'tcp.connect', port, ...(opts.host ? { host: opts.host } : {}) } as { op: string };
    const request = requestFrame(stream, body);
    const tcp = new TcpStream(
      {
        send: (type, chunk) => this.sendData(stream, type === 'eof' ? FrameType.EOF : FrameType.DATA, chunk),
        cancel: () => {
          if (!this.streams.has(stream)) return;
          this.send(encodeFrame(FrameType.CANCEL, stream));
          this.endStream(stream);
        },
      },
      opts,
    );
    this.register(stream, {
      onFrame: (f) => {
        switch (f.type) {
          case FrameType.DATA:
            return tcp.onData(f.payload);
          case FrameType.EOF:
            return tcp.onEof();
          case FrameType.EVENT:
            return tcp.onConnected();
          case FrameType.RESULT:
            this.endStream(stream);
            return tcp.onResult();
          case FrameType.ERROR:
            this.endStream(stream);
            return tcp.onError(agentError(f));
          default:
            this.protocolViolation(`unexpected frame 0x${f.type.toString(16)} on tcp.connect stream`);
        }
      },
      fail: (err) => {
        this.endStream(stream);
        tcp.onError(err);
      },
    });
    this.send(request);
    return tcp;
  }

  /** Uploads a file; `data` may be one buffer or any async iterable of chunks. */
  writeFile(path: string, data: Buffer | AsyncIterable<Buffer>, opts: { mode?: number; maxBytes: number; signal?: AbortSignal }): Promise<TransferResult> {
    return this.upload({ op: 'file.write', path, mode: opts.mode, maxBytes: opts.maxBytes }, data, opts.signal);
  }

  /** A tar, tar.gz or zip: the agent tells them apart by their first bytes. */
  putArchive(path: string, data: Buffer | AsyncIterable<Buffer>, opts: { maxBytes: number; signal?: AbortSignal }): Promise<TransferResult> {
    return this.upload({ op: 'archive.put', path, maxBytes: opts.maxBytes }, data, opts.signal);
  }

  /** Streams a file out through `sink`; resolves once the agent confirms the whole transfer. */
  readFile(path: string, sink: ChunkSink, opts: { maxBytes: number; signal?: AbortSignal }): Promise<TransferResult> {
    return this.download({ op: 'file.read', path, maxBytes: opts.maxBytes }, sink, opts.signal, opts.maxBytes);
  }

  /** A small guest file as text (/proc and /sys files, which report no size). */
  async readText(path: string, opts: { maxBytes: number } = { maxBytes: 1 << 20 }): Promise<string> {
    const chunks: Buffer[] = [];
    await this.readFile(path, (c) => chunks.push(c), opts);
    return Buffer.concat(chunks).toString();
  }

  /** `maxBytes` is the host's own cap on the archive's size (the agent has none for archive.get). */
  getArchive(path: string, sink: ChunkSink, opts: { gzip: boolean; maxBytes?: number; signal?: AbortSignal }): Promise<TransferResult> {
    return this.download({ op: 'archive.get', path, gzip: opts.gzip }, sink, opts.signal, opts.maxBytes);
  }

  /** A microVM workspace's upper layer as the NDJSON of `kiln-agent host ws-scan` (docs/protocol.md `ws.scan`). */
  workspaceScan(sink: ChunkSink, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<TransferResult> {
    return this.download({ op: 'ws.scan' }, sink, opts.signal, opts.maxBytes);
  }

  /** Configures a microVM guest's network (docs/protocol.md `net.config`): before any user code. */
  async netConfig(plan: NetConfigRequest, signal?: AbortSignal): Promise<void> {
    await this.request({ op: 'net.config', mac: plan.mac, address: plan.address, prefix: plan.prefix, gateway: plan.gateway, dns: plan.dns }, { signal });
  }

  /** Syncs a microVM workspace's upper to its drive (docs/protocol.md `ws.flush`): before the VM is killed. */
  async workspaceFlush(signal?: AbortSignal): Promise<void> {
    await this.request({ op: 'ws.flush' }, { signal });
  }

  private async upload(req: object, data: Buffer | AsyncIterable<Buffer>, signal?: AbortSignal): Promise<TransferResult> {
    const stream = this.allocStream();
    const request = requestFrame(stream, req);
    const done = this.expectResult(stream, validateTransfer, 'transfer', signal);
    // The agent may answer (TOO_LARGE, a read-only folder, a full disk) while the body is still
    // arriving: observed from the start, so that answer is never an unhandled rejection.
    done.catch(() => undefined);
    if (signal?.aborted) return done;
    this.send(request);
    const answered = done.then(
      (): typeof ANSWERED => ANSWERED,
      (): typeof ANSWERED => ANSWERED,
    );
    const source = (
      Buffer.isBuffer(data)
        ? (async function* () {
            yield data;
          })()
        : data
    )[Symbol.asyncIterator]();
    let finished = false;
    try {
      for (;;) {
        const next = source.next();
        const step = await Promise.race([next, answered]);
        if (step === ANSWERED) {
          // Stop reading the body; the pending read settles whenever the client sends or goes.
          next.catch(() => undefined);
          break;
        }
        if (step.done) {
          finished = true;
          await this.sendData(stream, FrameType.EOF, EMPTY);
          break;
        }
        // Waits for the agent's window: a slow disk or a full pipe slows the client's upload.
        if (!(await this.sendData(stream, FrameType.DATA, step.value))) break;
      }
    } catch (e) {
      if (this.streams.has(stream)) this.send(encodeFrame(FrameType.CANCEL, stream));
      await done.catch(() => undefined);
      throw e;
    } finally {
      if (!finished) void Promise.resolve(source.return?.()).catch(() => undefined);
    }
    return done;
  }

  private download(req: object, sink: ChunkSink, signal?: AbortSignal, maxBytes = Number.POSITIVE_INFINITY): Promise<TransferResult> {
    const stream = this.allocStream();
    const request = requestFrame(stream, req);
    let got = 0;
    const done = this.expectResult(stream, validateTransfer, 'transfer', signal, (f) => {
      if (f.type === FrameType.DATA) {
        got += f.payload.length;
        // The host's own budget: an agent that sends more than was asked for is cut off here.
        if (got > maxBytes)
          return this.failStream(stream, new KilnError('PAYLOAD_TOO_LARGE', `the transfer is over the ${maxBytes}-byte limit; it was stopped`, { details: { limitBytes: maxBytes } }));
        return sink(f.payload);
      }
      if (f.type !== FrameType.EOF) this.protocolViolation(`unexpected frame 0x${f.type.toString(16)} on download stream`);
    });
    if (!signal?.aborted) this.send(request);
    return done;
  }

  /** A plain request: REQUEST out, one RESULT (or ERROR) back. */
  private request(body: object, opts: { signal?: AbortSignal } = {}): Promise<unknown> {
    const stream = this.allocStream();
    const request = requestFrame(stream, body);
    const done = this.expectResult(stream, (v: unknown): v is unknown => true, 'request', opts.signal);
    if (!opts.signal?.aborted) this.send(request);
    return done;
  }

  private expectResult<T>(stream: number, validate: (v: unknown) => v is T, what: string, signal?: AbortSignal, other?: (f: Frame) => unknown): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closedError) return reject(this.closedError);
      // Aborted before anything was sent: nothing to cancel (the callers send nothing either).
      if (signal?.aborted) return reject(abortedError(what, signal));
      const onAbort = (): void => this.failStream(stream, abortedError(what, signal));
      signal?.addEventListener('abort', onAbort, { once: true });
      const finish = (): void => {
        this.endStream(stream);
        signal?.removeEventListener('abort', onAbort);
      };
      this.register(stream, {
        onFrame: (f) => {
          if (f.type === FrameType.RESULT) {
            finish();
            const raw = decodeJson(f);
            if (!validate(raw)) return reject(new KilnError('AGENT_PROTOCOL', `agent ${what} result is malformed`));
            resolve(raw);
          } else if (f.type === FrameType.ERROR) {
            finish();
            reject(agentError(f));
          } else if (other) return other(f);
          else this.protocolViolation(`unexpected frame 0x${f.type.toString(16)} on ${what} stream`);
        },
        fail: (err) => {
          finish();
          reject(err);
        },
      });
    });
  }

  private allocStream(): number {
    if (this.closedError) throw this.closedError;
    const id = this.nextStream;
    this.nextStream = this.nextStream >= 0x7fff_fffd ? 1 : this.nextStream + 2;
    return id;
  }

  private register(stream: number, state: Omit<StreamState, 'send' | 'recv'>): void {
    const recv = new RecvWindow((n) => {
      if (this.streams.has(stream)) this.send(encodeFrame(FrameType.WINDOW, stream, windowPayload(n)));
    });
    this.streams.set(stream, { ...state, send: new SendWindow(), recv });
  }

  /** Forgets a finished stream; senders waiting for its window stop. */
  private endStream(stream: number): void {
    this.streams.get(stream)?.send.end();
    this.streams.delete(stream);
  }

  /** Gives up a stream from this side: the agent is told (CANCEL), the caller gets `err`. */
  private failStream(stream: number, err: KilnError): void {
    const state = this.streams.get(stream);
    if (!state) return;
    this.send(encodeFrame(FrameType.CANCEL, stream));
    state.fail(err);
  }

  /**
   * Sends STDIN, DATA or EOF as the stream's window allows (splitting where it must); false once
   * the stream is over. Rejects only when the connection is gone.
   */
  private async sendData(stream: number, type: typeof FrameType.STDIN | typeof FrameType.DATA | typeof FrameType.EOF, data: Buffer): Promise<boolean> {
    let offset = 0;
    do {
      const window = this.streams.get(stream)?.send;
      if (!window) return false;
      const n = await window.take(Math.min(data.length - offset, DATA_CHUNK_BYTES));
      if (n < 0) return false;
      await this.sendAsync(encodeFrame(type, stream, data.subarray(offset, offset + n)));
      offset += n;
    } while (offset < data.length);
    return true;
  }

  private send(frame: Buffer): void {
    if (this.closedError) return;
    this.io.writable.write(frame);
  }

  private async sendAsync(frame: Buffer): Promise<void> {
    if (this.closedError) throw this.closedError;
    if (this.io.writable.write(frame)) return;
    await this.drained();
  }

  /** One wait for 'drain' shared by every sender, and never past the connection's end. */
  private drained(): Promise<void> {
    this.drain ??= new Promise<void>((resolve, reject) => {
      const stop = this.onClose(reject);
      this.io.writable.once('drain', () => {
        stop();
        resolve();
      });
    }).finally(() => {
      this.drain = undefined;
    });
    return this.drain;
  }

  private onData(chunk: Buffer): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.protocolViolation((e as Error).message);
      return;
    }
    for (const frame of frames) {
      const state = this.streams.get(frame.stream);
      if (!state) continue; // late frames of a cancelled or finished stream
      try {
        if (frame.type === FrameType.WINDOW) {
          state.send.add(parseWindow(frame.payload));
        } else if (FLOW_TYPES.has(frame.type)) {
          const cost = state.recv.charge(frame.payload.length);
          const passed = state.onFrame(frame);
          if (passed instanceof Promise)
            void passed.then(
              () => state.recv.consumed(cost),
              () => state.recv.consumed(cost),
            );
          else state.recv.consumed(cost);
        } else {
          void state.onFrame(frame);
        }
      } catch (e) {
        this.protocolViolation((e as Error).message);
        return;
      }
    }
  }

  private protocolViolation(message: string): void {
    this.shutdown(new KilnError('AGENT_PROTOCOL', `agent broke the protocol (${message}); the connection was dropped`));
  }

  private shutdown(err: KilnError): void {
    if (this.closedError) return;
    this.closedError = err;
    for (const state of [...this.streams.values()]) {
      state.send.end();
      state.fail(err);
    }
    this.streams.clear();
    this.io.readable.removeAllListeners('data');
    this.io.destroy?.();
    for (const l of this.closeListeners) l(err);
    this.closeListeners.clear();
  }
}

const EMPTY = Buffer.alloc(0);
