/**
 * A `tcp.connect` stream (docs/protocol.md) as a Node Duplex: what is written goes to the server
 * in the sandbox as DATA (as the agent's window allows), end() half-closes with EOF, and the
 * server's bytes are pushed as they come. A frame's credit goes back to the agent only once the
 * reader has taken it, so a client that does not read stops the server in the sandbox.
 * destroy() before the agent's answer cancels the stream: the sandbox side of the connection closes.
 */
import { Duplex } from 'node:stream';
import type { KilnError } from '../core/errors.js';

/** What a TcpStream needs of its AgentClient (kept narrow: the client's internals stay private). */
export interface TcpStreamPort {
  /** Sends DATA or EOF as the window allows; false once the stream is over. */
  send(type: 'data' | 'eof', chunk: Buffer): Promise<boolean>;
  /** Abandons the stream (CANCEL) if it is still open. */
  cancel(): void;
}

export type TcpDirection = 'in' | 'out';

export interface TcpStreamOptions {
  /** Counts bytes as they pass: `in` host → sandbox server, `out` back. */
  onBytes?: (direction: TcpDirection, bytes: number) => void;
}

export class TcpStream extends Duplex {
  /** Set once the agent has the connection open ('connect' is emitted then). */
  connected = false;
  private answered = false;
  private waiting: Array<() => void> = [];

  constructor(
    private readonly port: TcpStreamPort,
    private readonly options: TcpStreamOptions = {},
  ) {
    // allowHalfOpen: the server's EOF does not end our writing side, nor ours its.
    super({ allowHalfOpen: true });
  }

  /** The server's bytes: resolves when the reader has room again (the frame's credit waits for it). */
  onData(chunk: Buffer): undefined | Promise<void> {
    if (this.destroyed) return undefined;
    this.options.onBytes?.('out', chunk.length);
    if (this.push(chunk)) return undefined;
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  onConnected(): void {
    this.connected = true;
    this.emit('connect');
  }

  /** The server closed its side. */
  onEof(): void {
    if (!this.destroyed) this.push(null);
  }

  /** RESULT: both directions are done. */
  onResult(): void {
    this.answered = true;
    this.onEof();
    this.wakeReaders();
  }

  /** ERROR, or the agent connection lost. */
  onError(err: KilnError): void {
    this.answered = true;
    this.wakeReaders();
    this.destroy(err);
  }

  override _read(): void {
    this.wakeReaders();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.options.onBytes?.('in', chunk.length);
    this.forward('data', chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    // Ending a stream the agent has already finished is no error: there is nothing left to close.
    this.port.send('eof', Buffer.alloc(0)).then(
      () => cb(),
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.answered) this.port.cancel();
    this.answered = true;
    this.wakeReaders();
    cb(err);
  }

  private forward(type: 'data', chunk: Buffer, cb: (err?: Error | null) => void): void {
    this.port.send(type, chunk).then(
      (open) => cb(open ? null : Object.assign(new Error('the connection in the sandbox is closed'), { code: 'EPIPE' })),
      (e: unknown) => cb(e as Error),
    );
  }

  private wakeReaders(): void {
    const w = this.waiting;
    this.waiting = [];
    for (const r of w) r();
  }
}
